"""How much memory one window of separation needs, and the longest window a budget allows.

A window's peak memory is the model's weights, plus the input, plus the most
bytes that the tensors of one forward pass hold at any one time. The last is
found by running the forward pass on *fake* tensors (PyTorch's
``FakeTensorMode``: shapes, dtypes and devices, no data, no arithmetic) while
counting the bytes of every tensor from the moment an operation returns it to
the moment it is freed (:class:`LiveBytes`). So the estimate follows the
model as it really runs: any block (transformer or RNN), attention through
the fused kernel or computed explicitly (quadratic in the number of chunks),
the precision of each part (:mod:`nass.precision`), for any length, in a
fraction of a second and without allocating anything.

What it leaves out: scratch memory an operation allocates and frees inside
itself (e.g. a fused attention's blocks), and the allocator's own overhead.
Measured against the peak resident memory of real forward passes
(``tests/test_memory.py``; ``benchmarks/README.md`` for the release-size
models) it is within 15 %.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBRNNBlock
>>> from nass.separator import NoiseAwareSeparator
>>> block = lambda: SBRNNBlock(input_size=16, hidden_channels=8, num_layers=1, bidirectional=True)
>>> model = NoiseAwareSeparator(
...     Encoder(kernel_size=16, out_channels=16),
...     Dual_Path_Model(16, 16, block(), block(), num_layers=1, K=20, num_spks=3),
...     Decoder(in_channels=16, out_channels=1, kernel_size=16, stride=8, bias=False),
...     num_spks=2).eval()
>>> one, two = (forward_bytes(model, seconds * 8000) for seconds in (10, 20))
>>> round(two / one, 1)                     # an RNN's memory grows with the window
2.0
>>> budget = window_bytes(model, 15 * 8000)
>>> longest = longest_window(model, budget, shortest=16)
>>> 14.5 * 8000 <= longest <= 15 * 8000 and window_bytes(model, longest) <= budget
True
"""

import ctypes
import ctypes.util
import math
import os
import weakref
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30
# The default budget: this share of the memory available when the separator
# is made (the rest is left to the process's signals and to other programs).
AVAILABLE_SHARE = 0.8
# glibc's mallopt parameter, and the size from which freed blocks go straight
# back to the system (see give_back_large_blocks).
M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 2**20
# longest_window stops when the window is known to within this fraction.
PRECISION = 0.01


class LiveBytes(TorchDispatchMode):
    """Counts the bytes held by tensors that operations return, and their peak, while active.

    Tensors that share storage (views, in-place results) count once; the
    storages in ``external`` (weights, inputs) never count.
    """

    def __init__(self, external=()):
        super().__init__()
        self.external = set(external)
        self.holders = {}
        self.sizes = {}
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(result)[0]:
            if isinstance(tensor, torch.Tensor):
                self._hold(tensor)
        self.peak = max(self.peak, self.now)
        return result

    def _hold(self, tensor):
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.external:
            return
        if key not in self.holders:
            self.holders[key] = 0
            self.sizes[key] = storage.nbytes()
            self.now += self.sizes[key]
        self.holders[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key):
        self.holders[key] -= 1
        if not self.holders[key]:
            del self.holders[key]
            self.now -= self.sizes.pop(key)


def forward_bytes(model, samples):
    """The most bytes the tensors of ``model``'s forward pass on ``[1, samples]`` hold at once.

    Traced on fake tensors (nothing is computed or allocated), under
    ``no_grad``, with ``model``'s own dtypes, device and hooks.
    """
    weights = dict(model.named_parameters())
    weights.update(model.named_buffers())
    device = next(iter(weights.values())).device
    with FakeTensorMode() as fake:
        fake_weights = {name: fake.from_tensor(value) for name, value in weights.items()}
        mixture = torch.zeros(1, int(samples), device=device)
    counter = LiveBytes(external=[t.untyped_storage()._cdata
                                  for t in [mixture, *fake_weights.values()]])
    with torch.no_grad(), fake, counter:
        torch.func.functional_call(model, fake_weights, (mixture,))
    return counter.peak


def weights_bytes(model):
    """Bytes of ``model``'s parameters and buffers."""
    return sum(t.numel() * t.element_size()
               for t in [*model.parameters(), *model.buffers()])


def window_bytes(model, samples):
    """Peak bytes of separating one window of ``samples``: weights, input and :func:`forward_bytes`."""
    return weights_bytes(model) + 4 * int(samples) + forward_bytes(model, samples)


def longest_window(model, budget, shortest, upper=None):
    """The most samples, from ``shortest`` to ``upper`` (None: no bound), whose :func:`window_bytes` fit ``budget``.

    The answer is exact to :data:`PRECISION` of its length, found by
    doubling then bisection on traced estimates (a fraction of a second
    each). Returns None when not even ``shortest`` samples fit.
    """
    if window_bytes(model, shortest) > budget:
        return None
    low, high = shortest, None
    probe = upper if upper is not None else max(2 * shortest, 2**20)
    while high is None:
        if window_bytes(model, probe) <= budget:
            if probe == upper:
                return upper
            low, probe = probe, probe * 2
            if upper is not None:
                probe = min(probe, upper)
        else:
            high = probe
    while high - low > max(1, PRECISION * low):
        middle = (low + high) // 2
        if window_bytes(model, middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def available_memory(device):
    """Bytes free for the process on ``device``: CUDA's free memory, or the system's available."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_budget(model, device):
    """Bytes for the weights and one window: the weights plus :data:`AVAILABLE_SHARE` of what is free."""
    return weights_bytes(model) + math.floor(AVAILABLE_SHARE * available_memory(device))


def give_back_large_blocks():
    """Has glibc's malloc map blocks of :data:`LARGE_BLOCK` or more on their own; True if it could.

    By default glibc raises this threshold (up to 32 MiB) each time a large
    block is freed, so the tensors of a window (a few MiB to tens of MiB
    each) end up on its heaps, where freed space is reused only by blocks that
    fit in it and the heaps grow: measured with the release-size Sepformer
    on an 8 s window in fp32, the process grew by 433 MiB for 266 MiB of
    tensors. With a fixed threshold every large tensor gets its own mapping,
    returned to the system when freed, and the memory a window takes is what
    its tensors hold (267 to 270 MiB: :func:`forward_bytes` to 2 %).
    Elsewhere than glibc (macOS, musl) nothing changes and False is returned.
    """
    mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt", None)
    return bool(mallopt) and mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK) == 1
