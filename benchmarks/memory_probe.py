"""Measuring the memory a real forward pass takes, to check ``nass.inference.memory``'s estimate.

Used by ``benchmarks/inference.py --memory`` and ``tests/test_memory.py``.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch


def measured_forward_bytes(model, samples):
    """How much one real forward pass on ``[1, samples]`` raised this process's resident memory (Linux).

    For checking :func:`forward_bytes`: the pass runs once on a short input
    first (lazy initialisation, the kernels' caches), then the peak is reset
    (``/proc/self/clear_refs``) and the pass on ``samples`` runs; the answer
    is its peak resident memory minus that before it. Call
    :func:`nass.inference.process.give_back_large_blocks` first (so the
    growth is the tensors' own, not the heap's) and run it in a fresh process.
    """
    mixture = torch.randn(1, int(samples), generator=torch.Generator().manual_seed(0))

    def status(key):
        with open("/proc/self/status", encoding="ascii") as lines:
            return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key))

    with torch.no_grad():
        model(mixture[:, :min(int(samples), 4000)])
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        before = status("VmRSS:")
        model(mixture)
        return status("VmHWM:") - before


# Run by measure_windows in a fresh Python process: argv[1] is its configs as JSON.
MEASURE_SCRIPT = """
import json, sys, torch
from nass.model.loading import load_model
from nass.inference.memory import forward_bytes
from nass.inference.process import give_back_large_blocks
sys.path.insert(0, sys.argv[2])
from memory_probe import measured_forward_bytes
from nass.model.precision import set_precision
from nass.inference.slices import in_slices
torch.set_num_threads(1)
give_back_large_blocks()
results = {}
for name, (hparams, overrides, precision, samples, *sliced) in json.loads(sys.argv[1]).items():
    model = set_precision(load_model(hparams, overrides).eval(), precision)
    if sliced and sliced[0]:
        in_slices(model, sliced[0])
    results[name] = [measured_forward_bytes(model, samples), forward_bytes(model, samples)]
print(json.dumps(results))
"""


def measure_windows(configs, timeout=None):
    """``{name: (measured, estimated)}``: one forward pass of each model, measured and traced.

    ``configs`` is ``{name: (hparams file, overrides, precision, samples[, slice
    elements])}``, the last to run the dual-path blocks in slices
    (:func:`nass.inference.slices.in_slices`) as ``nass separate`` does on the CPU;
    the models are built and measured one after the other in one fresh
    Python process on one thread (:func:`measured_forward_bytes` against
    ``nass.inference.memory.forward_bytes``), with glibc's large blocks
    given back to the system (so growth is the tensors' own). Linux only. A failure of that
    process is a RuntimeError carrying the end of its stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE_SCRIPT,
         json.dumps({name: [str(config[0]), *config[1:]] for name, config in configs.items()}),
         str(Path(__file__).resolve().parent)],
        capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"measure_windows: the measuring process failed:\n{proc.stderr[-3000:]}")
    return {name: tuple(pair) for name, pair in json.loads(proc.stdout.splitlines()[-1]).items()}


