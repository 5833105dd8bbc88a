"""What the benchmark scripts share: interleaved timing, medians, tables, the last line.

The scripts compare variants (NASS against its baseline, ``nass`` against
mir_eval, ...) on a machine that other jobs share. So that a change of load
hits every variant alike, :func:`interleave` warms each variant up and then
runs them in alternation, repetition by repetition (A B A B ...); results are
reported as medians, which one disturbed repetition cannot move, and ratios
as :func:`paired_ratio`, the median over repetitions of the ratio of the two
runs that were made side by side. Each script ends with one line of
``key=value`` pairs (:func:`last_line`) for tools to read.

Example
-------
>>> timing = interleave({"a": lambda: sum(range(100)), "b": lambda: 1}, reps=3)
>>> sorted(timing.seconds), len(timing.seconds["a"]), timing.results["a"]
(['a', 'b'], 3, 4950)
>>> last_line(speedup=2.0, n=3)
'speedup=2.000 n=3'
"""

import datetime
import importlib.util
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def use_checkout():
    """Makes ``import nass`` find this checkout when the package is not installed."""
    if importlib.util.find_spec("nass") is None:
        sys.path.insert(0, str(REPO_ROOT))


@dataclass
class Timing:
    """What :func:`interleave` measured.

    Attributes
    ----------
    seconds : dict
        ``{name: [seconds of each repetition]}``, in the order run.
    results : dict
        ``{name: what the case returned the last time}``, so that callers
        can check the outputs of what they timed.
    """

    seconds: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    def median_ms(self, name):
        """Median time of case ``name`` in milliseconds."""
        return 1e3 * statistics.median(self.seconds[name])


def interleave(cases, reps, warmup=1, sync=None, progress=None):
    """Times every case ``reps`` times, the cases alternating within each repetition.

    Arguments
    ---------
    cases : dict
        ``{name: callable()}``, run in this order within each repetition.
    reps : int
        Timed repetitions per case.
    warmup : int
        Untimed calls per case first (lazy initialisation, allocator, caches).
    sync : callable, optional
        Called before each clock reading, e.g. ``torch.cuda.synchronize``,
        so that asynchronous work is counted where it was launched.
    progress : callable, optional
        Called as ``progress(rep, {name: seconds})`` after each repetition.

    Returns
    -------
    Timing
    """
    if reps < 1:
        raise ValueError(f"interleave: reps must be >= 1, got {reps}")
    timing = Timing({name: [] for name in cases}, {})
    for name, fn in cases.items():
        for _ in range(warmup):
            timing.results[name] = fn()
    for rep in range(reps):
        this_rep = {}
        for name, fn in cases.items():
            if sync is not None:
                sync()
            start = time.perf_counter()
            timing.results[name] = fn()
            if sync is not None:
                sync()
            this_rep[name] = time.perf_counter() - start
            timing.seconds[name].append(this_rep[name])
        if progress is not None:
            progress(rep, this_rep)
    return timing


def paired_ratio(numerator, denominator):
    """Median over repetitions of ``numerator[i] / denominator[i]``.

    The two runs of a repetition were made one right after the other, so a
    load that changes between repetitions cancels out in each ratio.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(
            f"paired_ratio: need two equally long, non-empty series, got "
            f"{len(numerator)} and {len(denominator)} values"
        )
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def format_table(headers, rows):
    """Left-aligned first column, right-aligned others; cells are printed with ``str``."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        first = row[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])

    rule = "-" * len(line(cells[0]))
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def machine_summary():
    """One line: date, usable cores, CPU model, Python and (if installed) torch versions."""
    parts = [
        datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        f"{len(os.sched_getaffinity(0))} cores",
        _cpu_model(),
        f"Python {platform.python_version()}",
    ]
    if importlib.util.find_spec("torch") is not None:
        import torch

        threads = torch.get_num_threads()
        parts.append(f"torch {torch.__version__} ({threads} thread{'s' * (threads != 1)})")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name()}")
    return ", ".join(parts)


def _cpu_model():
    # lscpu's "Model name" comes from here; platform.processor() is often empty on Linux.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            for line in fin:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def last_line(**values):
    """``key=value ...``: floats with three decimals, everything else as ``str``."""
    return " ".join(
        f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in values.items()
    )
