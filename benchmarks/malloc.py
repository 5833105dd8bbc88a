"""What the allocator costs separation on the CPU: time, kernel time, page faults, peak memory.

    python benchmarks/malloc.py                          # 25 s file, 15 s windows, one thread
    python benchmarks/malloc.py --seconds 45 --chunk-seconds 30 --policies mmap-1mib heap
    python benchmarks/malloc.py --seconds 60 --chunk-seconds 30 --threads 2 --whole   # blocks unsliced

Each policy separates the same recording (the release-size Sepformer-NASS with
random weights, as ``benchmarks/inference.py``) in a fresh process of its own,
on ``--threads`` threads (default one), the policies one after the other, through
:class:`nass.inference.Separator` as ``nass separate`` runs it (its dual-path
blocks in slices of sequences, :mod:`nass.inference.slices`; ``--whole``: each
block's sequences in one batch, as before 2026-12-05); each process reports, for
the separation alone (after the model is loaded; no warm-up pass, as in
``nass separate``), wall, user and system seconds and minor page faults from
``getrusage``, and its peak resident memory (the model's included). Policies:

* ``mmap-1mib``: glibc, blocks of 1 MiB or more mapped on their own
  (:func:`nass.inference.process.give_back_large_blocks`, what ``nass
  separate`` set before 2026-12-04);
* ``glibc``: glibc as it starts (blocks over its dynamic threshold, at most
  32 MiB, mapped on their own);
* ``heap``: glibc never mapping blocks on their own and keeping freed memory
  (:func:`nass.inference.process.reuse_freed_memory`, what ``nass separate`` sets);
* ``heap-one-arena``: ``heap`` with every thread allocating from glibc's main arena
  (``mallopt(M_ARENA_MAX, 1)``), to see whether per-thread arenas add to the peak;
* ``jemalloc``, ``tcmalloc``: those allocators through ``LD_PRELOAD``, where
  their libraries are installed (``libjemalloc2``, ``libtcmalloc-minimal4``).

Last line ``sys_share_<policy>=<system / (user + system)>`` for each policy run,
and ``peak_rss_mib_<policy>=<MiB>``.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import REPO_ROOT, format_table, last_line, machine_summary, use_checkout

use_checkout()

PRELOADS = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
POLICIES = ("mmap-1mib", "glibc", "heap", "heap-one-arena", "jemalloc", "tcmalloc")

# Run in a fresh process: argv[1] is the policy, argv[2] seconds, argv[3] window seconds,
# argv[4] threads, argv[5] "whole" or "sliced".
CHILD = r"""
import json, resource, sys, time
policy, seconds, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
from nass.inference import process
if policy == "mmap-1mib":
    assert process.give_back_large_blocks()
elif policy == "heap":
    assert process.reuse_freed_memory()
elif policy == "heap-one-arena":
    M_ARENA_MAX = -8  # glibc's mallopt parameter: at most this many arenas
    assert process.reuse_freed_memory() and process._mallopt()(M_ARENA_MAX, 1) == 1
import torch
torch.set_num_threads(int(sys.argv[4]))
sys.path.insert(0, "benchmarks")
from inference import HPARAMS, RATE, long_mixture
from nass.inference import Separator
from nass.model.loading import load_model
torch.manual_seed(0)
separator = Separator(load_model(HPARAMS), RATE, chunk_seconds=window, batch_size=1)
if sys.argv[5] == "whole":  # one slice as long as any input: each block's sequences at once
    from nass.inference.slices import in_slices
    in_slices(separator.model, elements=2**62)
mixture = torch.from_numpy(long_mixture(seconds / 60))
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
separator.separate_tensor(mixture, RATE)
wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "user": after.ru_utime - before.ru_utime,
                  "system": after.ru_stime - before.ru_stime,
                  "minor_faults": after.ru_minflt - before.ru_minflt,
                  "peak_rss_mib": after.ru_maxrss / 1024}))
"""


def library(name):
    """The path of shared library ``name`` in the usual folders, or None."""
    return next((str(Path(d) / name) for d in LIBRARY_DIRS if (Path(d) / name).exists()), None)


def run_policy(policy, seconds, window, threads, whole=False):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(REPO_ROOT)}
    if policy in PRELOADS:
        env["LD_PRELOAD"] = library(PRELOADS[policy])
    proc = subprocess.run([sys.executable, "-c", CHILD, policy, str(seconds), str(window),
                           str(threads), "whole" if whole else "sliced"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{policy}: the separating process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=25.0, help="the recording (default 25)")
    parser.add_argument("--chunk-seconds", type=float, default=15.0,
                        help="the window (default 15)")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--whole", action="store_true",
                        help="each dual-path block's sequences in one batch, not in slices")
    args = parser.parse_args()
    print(machine_summary())
    print(f"release-size Sepformer-NASS (random weights), fp32, {args.seconds:g} s at 8 kHz in "
          f"{args.chunk_seconds:g} s windows, {args.threads} thread(s), blocks "
          f"{'whole' if args.whole else 'in slices'}, each policy in a fresh process")
    rows, figures = [], {}
    for policy in args.policies:
        if policy in PRELOADS and library(PRELOADS[policy]) is None:
            print(f"  {policy}: skipped, {PRELOADS[policy]} is not installed", flush=True)
            continue
        r = run_policy(policy, args.seconds, args.chunk_seconds, args.threads, args.whole)
        share = r["system"] / (r["user"] + r["system"])
        print(f"  {policy}: {json.dumps(r)}", flush=True)
        rows.append([policy, f"{r['wall']:.1f}", f"{r['user']:.1f}", f"{r['system']:.1f}",
                     f"{share:.3f}", f"{r['minor_faults'] / 1e6:.2f}", f"{r['peak_rss_mib']:.0f}"])
        key = policy.replace("-", "_")
        figures[f"sys_share_{key}"] = share
        figures[f"peak_rss_mib_{key}"] = r["peak_rss_mib"]
    print(format_table(["policy", "wall s", "user s", "system s", "system share",
                        "minor faults M", "peak RSS MiB"], rows))
    print(last_line(**figures))


if __name__ == "__main__":
    main()
