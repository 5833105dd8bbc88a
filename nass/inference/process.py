"""Process plumbing for separation: a computation in a throw-away child, the memory available, malloc.

Example
-------
>>> in_a_child(sum, [1, 2, 3])
6
"""

import ctypes
import ctypes.util
import os
import pickle
from pathlib import Path

import torch

# glibc's mallopt parameters, and the size from which blocks are mapped on
# their own when measuring (see give_back_large_blocks).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
LARGE_BLOCK = 2**20
# Free memory at the top of the heap kept for reuse up to this much (glibc's int).
KEEP_FREED = 2**31 - 1


def in_a_child(function, *args):
    """``function(*args)`` computed in a forked child process, whose memory goes when it ends.

    The child gets a copy of this process (nothing is copied until it is
    written) and sends the result back through a pipe; where there is no
    ``fork`` (Windows), ``function`` runs here.

    """
    if not hasattr(os, "fork"):
        return function(*args)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            try:
                result = (True, function(*args))
            except Exception as err:  # sent back, raised in the parent
                result = (False, err)
            with os.fdopen(write, "wb") as pipe:
                pickle.dump(result, pipe)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"in_a_child: the child process computing {function.__name__} died")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


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


def give_back_large_blocks():
    """Has glibc's malloc map blocks of :data:`LARGE_BLOCK` or more on their own; True if it could.

    For measuring what one forward pass's tensors take
    (``benchmarks/memory_probe.py``): every large tensor then comes from
    the system and goes back to it when freed, so the growth of the
    resident memory is the tensors' own. Not for separating: the fresh,
    zeroed pages of every large tensor cost a quarter of the CPU time in the
    kernel (:func:`reuse_freed_memory`). Elsewhere than glibc nothing
    changes and False is returned.
    """
    mallopt = _mallopt()
    return bool(mallopt) and mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK) == 1


def reuse_freed_memory():
    """Has glibc's malloc keep every block on its heap and reuse freed memory; True if it could.

    Set by ``nass separate`` when it starts. glibc otherwise maps every
    block over its threshold (at most 32 MiB; a 30 s window's tensors are
    30-60 MiB) afresh, so each window's tensors are new pages, faulted in
    and zeroed by the kernel; and below the threshold its heaps fragment
    and grow. Kept on the heap (no mapping, no trimming), the windows'
    tensors reuse the same memory. The heap stays about as large as a
    window's tensors only when they are small: the separator runs the
    dual-path blocks in slices on the CPU (:mod:`nass.inference.slices`);
    whole, a 30 s window's 60 to 240 MiB tensors fragment it to 1.7 times
    that. Measured (``benchmarks/malloc.py``, figures in
    ``benchmarks/README.md``): kernel time from 27 % of the CPU time to
    about 1 %, peak memory from 15 % under to 8 % over what the whole
    blocks took mapped on their own (it varies with the threads' timing).
    Elsewhere than glibc nothing changes and False is returned.
    """
    mallopt = _mallopt()
    return bool(mallopt) and mallopt(M_MMAP_MAX, 0) == 1 and \
        mallopt(M_TRIM_THRESHOLD, KEEP_FREED) == 1


def _mallopt():
    """The C library's ``mallopt``, or None where it has none (not glibc)."""
    return getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt", None)
