"""Dual-path blocks that separate a slice of their sequences at a time: same outputs, less memory.

A dual-path block runs its intra and inter models over every chunk (or every
position) of a window as one batch of sequences. The sequences are
independent, so they can go through in slices: the outputs are the same
(bit for bit on the CPU, measured in ``benchmarks/README.md``) while the
largest tensors are a slice's. On the CPU that is what lets glibc reuse
freed memory without its heap fragmenting (:func:`nass.inference.process.reuse_freed_memory`):
a 30 s window of the release-size Sepformer makes tensors of 60 to 240 MiB
in one batch and of 4 to 16 MiB in slices of :data:`SLICE_ELEMENTS`.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.dual_path import SBTransformerBlock
>>> torch.manual_seed(0) and None
>>> block = SBTransformerBlock(num_layers=1, d_model=16, nhead=2, d_ffn=32, dropout=0).eval()
>>> x = torch.randn(10, 40, 16)
>>> with torch.no_grad():
...     whole = block(x)
...     state = dict(block.state_dict())
...     _ = in_slices(block, elements=3 * 40 * 16)          # 3 sequences at a time
...     sliced = block(x)
>>> type(block).__name__, list(block.state_dict()) == list(state), torch.equal(sliced, whole)
('SlicedSBTransformerBlock', True, True)
"""

import torch
from speechbrain.lobes.models.dual_path import SBRNNBlock, SBTransformerBlock

# Input elements per slice: 16 chunks of the release-size Sepformer (250 frames x 256).
SLICE_ELEMENTS = 2**20


class SliceSequences:
    """Runs the block over slices of its ``[sequences, length, features]`` input when no gradient is kept.

    With gradients the whole batch goes through at once, as in training
    (the activations would be kept for the backward pass anyway).
    """

    slice_elements = SLICE_ELEMENTS

    def forward(self, x):
        rows = max(1, self.slice_elements // max(1, x.shape[1] * x.shape[2]))
        if torch.is_grad_enabled() or x.shape[0] <= rows:
            return super().forward(x)
        parts = x.split(rows)
        first = super().forward(parts[0])
        # Each slice's output written into one tensor: no list of outputs to concatenate.
        out = first.new_empty((x.shape[0], *first.shape[1:]))
        out[:rows] = first
        del first
        for index, part in enumerate(parts[1:], start=1):
            out[index * rows:index * rows + part.shape[0]] = super().forward(part)
        return out


class SlicedSBTransformerBlock(SliceSequences, SBTransformerBlock):
    """SpeechBrain's ``SBTransformerBlock`` (Sepformer), in slices under ``no_grad``."""


class SlicedSBRNNBlock(SliceSequences, SBRNNBlock):
    """SpeechBrain's ``SBRNNBlock`` (DPRNN), in slices under ``no_grad``."""


SLICED = {SBTransformerBlock: SlicedSBTransformerBlock, SBRNNBlock: SlicedSBRNNBlock}


def in_slices(model, elements=SLICE_ELEMENTS):
    """Makes the dual-path blocks in ``model`` run in slices of ``elements`` input elements, in place.

    Every ``SBTransformerBlock`` and ``SBRNNBlock`` (the intra and inter
    models of SpeechBrain's dual-path networks) changes class to its sliced
    subclass, as ``torch.nn.utils.parametrize`` does: parameters, names and
    state dict stay as they are. Other blocks are left whole. Returns ``model``.
    """
    if not (isinstance(elements, int) and elements >= 1):
        raise ValueError(f"elements must be a whole number >= 1, got {elements!r}")
    for module in model.modules():
        sliced = SLICED.get(type(module))
        if sliced is not None:
            module.__class__ = sliced
        if isinstance(module, SliceSequences):
            module.slice_elements = elements
    return model
