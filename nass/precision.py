"""Separating in bf16 or fp16: the mask network's weights in half precision, the rest in fp32.

:func:`set_precision` converts a loaded :class:`nass.separator.NoiseAwareSeparator`
in place for inference. Its weights are cast once (not per operation, as
``torch.autocast`` does, whose casts cost more than they save on a CPU):

* the mask network's dual-path blocks (the transformers or RNNs: almost all
  of the work) run in bf16 or fp16;
* kept in fp32, with their inputs cast up and their outputs back: every
  normalisation layer (their statistics are sums over hundreds of values),
  and the mask head after the dual-path blocks (the 1x1 conv to C(+1)
  masks, overlap-add, gated output convs, end conv), so that the masks
  themselves are not rounded to 8 bits of mantissa;
* the encoder and decoder (tiny, and the waveforms' precision matters) stay fp32.

Inputs and outputs stay fp32 tensors; state-dict names are unchanged.
fp16 is for CUDA only: CPUs have no fast fp16 matmuls, and its range is too
small to run without the loss scaling of training.

Example
-------
>>> from pathlib import Path
>>> import torch
>>> import nass
>>> from nass.inference import load_model
>>> from nass.metrics import si_snr
>>> hparams = (Path(nass.__file__).parents[1] / "recipes" / "LibriMix" / "separation"
...            / "hparams" / "sepformer-libri2mix.yaml")
>>> tiny = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1, "inter_layers": 1,
...         "nhead": 2, "d_ffn": 32, "chunk_size": 20}
>>> model = load_model(hparams, tiny)
>>> mix = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
>>> exact = model.eval()(mix)
>>> fast = set_precision(model, "bf16")
>>> fast.masknet.dual_mdl[0].intra_mdl.mdl.layers[0].pos_ffn.ffn[0].weight.dtype
torch.bfloat16
>>> fast(mix).dtype, bool(si_snr(fast(mix)[0].T, exact[0].T).min() > 30)
(torch.float32, True)
"""

import torch
from speechbrain.lobes.models.dual_path import GlobalLayerNorm
from torch import nn

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Normalisation layers, run in fp32 (CumulativeLayerNorm is an nn.LayerNorm).
NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, GlobalLayerNorm)
# Dual_Path_Model's layers after the dual-path blocks, run in fp32.
MASK_HEAD = ("conv2d", "output", "output_gate", "end_conv1x1")


def precision_dtype(precision, device=None):
    """The dtype of ``precision`` (fp32, bf16, fp16), usable on ``device`` if given; else ValueError.

    >>> precision_dtype("bf16")
    torch.bfloat16
    >>> precision_dtype("fp16", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: precision fp16 needs a CUDA device (device is cpu); on a CPU use bf16 or fp32
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device is not None and torch.device(device).type != "cuda":
        raise ValueError(
            f"precision fp16 needs a CUDA device (device is {device}); on a CPU use bf16 or fp32"
        )
    return PRECISIONS[precision]


def set_precision(model, precision):
    """Runs ``model``'s mask network in ``precision`` as the module docstring says; in place.

    Arguments
    ---------
    model : nass.separator.NoiseAwareSeparator
        In fp32, on the device it will run on (fp16 needs CUDA).
    precision : str
        ``fp32`` (nothing changes), ``bf16`` or ``fp16``.

    Returns
    -------
    The same ``model``.
    """
    if precision_dtype(precision) == torch.float32:
        return model
    masknet = model.masknet
    dtype = precision_dtype(precision, next(masknet.parameters()).device)
    if any(p.dtype != torch.float32 for p in masknet.parameters()):
        raise ValueError("set_precision: the mask network is not in fp32 (converted already?)")
    masknet.to(dtype)
    _run_in(masknet, dtype, torch.float32)
    for norm in (m for m in masknet.modules() if isinstance(m, NORMS)):
        _run_in(norm.float(), torch.float32, dtype)
    # From the mask head on, everything stays fp32, down to the masks.
    for name in MASK_HEAD:
        if hasattr(masknet, name):
            _run_in(getattr(masknet, name).float(), torch.float32, torch.float32)
    return model


def _run_in(module, dtype, out_dtype):
    """Hooks casting ``module``'s floating inputs to ``dtype`` and its output to ``out_dtype``."""

    def cast_inputs(_, args):
        return tuple(_cast(a, dtype) for a in args)

    def cast_output(_, __, output):
        return _cast(output, out_dtype)

    module.register_forward_pre_hook(cast_inputs)
    module.register_forward_hook(cast_output)


def _cast(value, dtype):
    if torch.is_tensor(value) and value.is_floating_point():
        return value.to(dtype)
    return value
