"""Speed and agreement of ``nass.metrics.sdr`` against mir_eval's ``bss_eval_sources``.

Both compute BSS-Eval v3 SDR (512-tap filter, permutation of best mean SIR)
on the same speech-like utterances at 8 kHz: harmonic sources with gliding
pitch under a syllabic envelope plus coloured noise; estimates are the
references with leakage of another source, coloured noise and a short FIR
distortion, shuffled. After one warm-up call each, the two are timed in
alternation, repetition by repetition, so that drifts in machine load hit
both; the table reports medians.

The last line reads ``speedup_vs_mir_eval=<x> max_abs_dsdr_db=<dB>``, the
speedup being total mir_eval time over total ``nass`` time (sum of medians).

Example
-------
``python benchmarks/metrics.py --reps 3``
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

try:
    from nass.data.synthetic import imperfect_estimates
    from nass.metrics import sdr
except ImportError:  # run from a checkout without ``pip install``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from nass.data.synthetic import imperfect_estimates
    from nass.metrics import sdr

SR = 8000


def utterance(seed, n_src, seconds):
    """``(estimates, references)``, ``[n_src, T]`` each, estimates shuffled."""
    estimates, references, _ = imperfect_estimates(seed, n_src, seconds, SR)
    return estimates, references


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reps", type=int, default=3, help="timed repetitions per case (default 3)"
    )
    parser.add_argument(
        "--seconds", type=float, nargs="+", default=[2, 4, 6, 10], help="utterance lengths in s"
    )
    parser.add_argument("--sources", type=int, nargs="+", default=[2, 3], help="source counts")
    args = parser.parse_args(argv)

    # mir_eval 0.8 flags bss_eval_sources as deprecated on every call.
    warnings.simplefilter("ignore", FutureWarning)
    from mir_eval.separation import bss_eval_sources

    def reference(ests, refs):
        return bss_eval_sources(refs, ests)[0]

    header = (
        f"{'length s':>8} {'n_src':>5} {'nass ms':>9} {'mir_eval ms':>11} "
        f"{'speedup':>7} {'max |dSDR| dB':>13}"
    )
    print(header)
    print("-" * len(header))
    total_ours = total_ref = 0.0
    worst = 0.0
    for case, (seconds, n_src) in enumerate((s, n) for s in args.seconds for n in args.sources):
        ests, refs = utterance(case, n_src, seconds)
        ours_out, ref_out = sdr(ests, refs), reference(ests, refs)  # warm-up
        ours_s, ref_s = [], []
        for _ in range(args.reps):
            elapsed, ours_out = timed(sdr, ests, refs)
            ours_s.append(elapsed)
            elapsed, ref_out = timed(reference, ests, refs)
            ref_s.append(elapsed)
        ours, ref = statistics.median(ours_s), statistics.median(ref_s)
        diff = float(np.max(np.abs(ours_out - ref_out)))
        total_ours, total_ref, worst = total_ours + ours, total_ref + ref, max(worst, diff)
        print(
            f"{seconds:>8g} {n_src:>5d} {1e3 * ours:>9.1f} {1e3 * ref:>11.1f} "
            f"{ref / ours:>7.2f} {diff:>13.2e}"
        )
    print(f"speedup_vs_mir_eval={total_ref / total_ours:.2f} max_abs_dsdr_db={worst:.2e}")


if __name__ == "__main__":
    main()
