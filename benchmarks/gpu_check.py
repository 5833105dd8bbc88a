"""One command that proves the GPU paths: the cuda tests, the GPU benchmarks, one summary.

    python3 benchmarks/gpu_check.py --out "$OUT"      # on a CUDA machine (meant for < 5 min on an H200)
    python3 benchmarks/gpu_check.py --device cpu      # what a CPU can run of it

It runs ``python -m pytest -m cuda tests`` (``tests/test_gpu.py``, which write
their figures to ``--out``/gpu_report.json through ``NASS_GPU_REPORT``); the
ONNX export test with CUDA hidden (does an ONNX failure come with the
machine's torch, not with CUDA?); ``inference.py --compare`` and, on CUDA,
``train_step.py`` per precision, each short and time-limited (TIMEOUTS), with
SpeechBrain's TF32 quirk off so that their fp32 is fp32.
Needs no ``pip install -e`` (subprocesses get the checkout on PYTHONPATH).
``--device cpu``: the same tests (skipped), the ONNX test, ``--compare`` on a
1 s window; ``n/a`` for what was not measured. It prints a table, then the line
``cuda_tests_passed=<n>/<n> fp32_vs_cpu_db=<min> fp16_vs_cpu_db=<min>
bf16_vs_cpu_db=<min> train_fp16_finite=<0|1> train_bf16_finite=<0|1>
train_tf32_finite=<0|1> nccl=<0|1>``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The recipe runs of tests/test_gpu.py (which takes them from here): precision and PCL patches.
TRAIN_RUNS = {"fp16": ("scalar", "frame"), "bf16": ("scalar", "frame"), "tf32": ("frame",)}
# Short benchmark runs, by device. On a CPU, train_step.py's release-size steps take a minute
# or two each (2 loaded cores), so it is left out there.
INFERENCE_FLAGS = {"cuda": ["--window-seconds", "8", "--reps", "2", "--warmup", "1"],
                   "cpu": ["--window-seconds", "1", "--reps", "1", "--warmup", "0"]}
TRAIN_STEP_PRECISIONS = {"cuda": ("fp32", "bf16", "fp16"), "cpu": ()}
# Seconds each part may take; on CUDA they sum to 9 minutes, within one 10-minute device call.
TIMEOUTS = {"cuda": {"tests": 240, "onnx": 60, "inference": 90, "train_step": 50},
            "cpu": {"tests": 300, "onnx": 300, "inference": 300}}


def parse_last_line(text):
    """``{key: value}`` of the last ``key=value ...`` line of a script's output ({} if none)."""
    for line in reversed(text.strip().splitlines()):
        pairs = [word.split("=", 1) for word in line.split()]
        if pairs and all(len(pair) == 2 and pair[0] for pair in pairs):
            return dict(pairs)
    return {}


def junit_counts(path):
    """``(passed, failed, skipped)`` test counts of a pytest ``--junitxml`` file."""
    passed = failed = skipped = 0
    for case in ElementTree.parse(path).iter("testcase"):
        if case.find("skipped") is not None:
            skipped += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        else:
            passed += 1
    return passed, failed, skipped


def summary_line(report, passed, failed, skipped):
    """The last line, from the tests' report and counts: ``n/a`` for what was not measured.

    >>> summary_line({"fp32_vs_cpu_db": 58.61, "nccl": 1}, 3, 1, 0)
    'cuda_tests_passed=3/4 fp32_vs_cpu_db=58.61 fp16_vs_cpu_db=n/a bf16_vs_cpu_db=n/a train_fp16_finite=0 train_bf16_finite=0 train_tf32_finite=0 nccl=1'
    >>> summary_line({}, 0, 0, 12).split()[:2]
    ['cuda_tests_passed=n/a', 'fp32_vs_cpu_db=n/a']
    """
    ran = passed + failed > 0   # else every cuda test skipped: no GPU

    def flag(keys):
        return str(int(all(report.get(key) == 1 for key in keys))) if ran else "n/a"

    values = {"cuda_tests_passed": f"{passed}/{passed + failed + skipped}" if ran else "n/a"}
    for precision in ("fp32", "fp16", "bf16"):
        key = f"{precision}_vs_cpu_db"
        values[key] = f"{report[key]:.2f}" if key in report else "n/a"
    for precision, patches in TRAIN_RUNS.items():
        values[f"train_{precision}_finite"] = flag(
            [f"train_{precision}_{patch}_finite" for patch in patches])
    values["nccl"] = flag(["nccl"])
    return " ".join(f"{key}={value}" for key, value in values.items())


def run_logged(name, cmd, out, env, timeout):
    """Runs ``cmd``, its output into ``out/<name>.log``; ``(exit status, output, seconds)``."""
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        status, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        status = "timeout"
        text = "".join(part.decode() if isinstance(part, bytes) else part or ""
                       for part in (err.stdout, err.stderr))
    (out / f"{name}.log").write_text(text)
    return status, text, time.monotonic() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda (default): everything; cpu: the pytest selection (skipped "
                             "without CUDA) and tiny benchmark runs on the CPU")
    parser.add_argument("--out", type=Path,
                        help="folder for gpu_report.json, the logs and summary.txt "
                             "(default: a temporary one)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible; use --device cpu")
    out = args.out or Path(tempfile.mkdtemp(prefix="nass-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "gpu_report.json"
    report_path.unlink(missing_ok=True)
    # Subprocesses find this checkout (and the wheels' folder already on PYTHONPATH).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        "NASS_GPU_REPORT": str(report_path), "PYTHONUNBUFFERED": "1"}
    python, timeouts = sys.executable, TIMEOUTS[args.device]
    rows = []

    passed, failed, skipped = run_pytest("cuda_tests", ["-m", "cuda", "tests"], out, env,
                                         timeouts["tests"], rows, "pytest -m cuda")
    run_pytest("onnx_without_cuda", ["tests/test_export.py", "-k", "onnx_export"], out,
               {**env, "CUDA_VISIBLE_DEVICES": ""}, timeouts["onnx"], rows,
               "ONNX export test, CUDA hidden")

    status, text, seconds = run_logged(
        "inference_compare", [python, "benchmarks/inference.py", "--compare", "--device",
                              args.device, *INFERENCE_FLAGS[args.device]],
        out, env, timeout=timeouts["inference"])
    rows.append([f"inference.py --compare --device {args.device}",
                 _figures(status, text), seconds])
    for precision in TRAIN_STEP_PRECISIONS[args.device]:
        status, text, seconds = run_logged(
            f"train_step_{precision}", [python, "benchmarks/train_step.py", "--device", args.device,
                                        "--precision", precision, "--seconds", "2", "--reps", "2"],
            out, env, timeout=timeouts["train_step"])
        rows.append([f"train_step.py --device {args.device} --precision {precision}",
                     _figures(status, text), seconds])
    if not TRAIN_STEP_PRECISIONS[args.device]:
        rows.append(["train_step.py", "n/a: not run on a CPU (minutes per step)", 0.0])

    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    width = max(len(row[0]) for row in rows)
    lines = [f"{'part'.ljust(width)}  {'seconds':>7}  result"]
    lines += [f"{name.ljust(width)}  {seconds:7.1f}  {result}" for name, result, seconds in rows]
    lines += [f"measured by the cuda tests: {json.dumps(report, sort_keys=True)}",
              f"logs and report: {out}",
              summary_line(report, passed, failed, skipped)]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def run_pytest(name, selection, out, env, timeout, rows, title):
    """Runs pytest on ``selection``, adds its row; ``(passed, failed, skipped)``."""
    # The JUnit file stays out of --out: a device run brings back 8 files (report, summary, 6 logs).
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        status, _, seconds = run_logged(
            name, [sys.executable, "-m", "pytest", *selection, "-rfs", "-p", "no:cacheprovider",
                   f"--junitxml={junit}"], out, env, timeout=timeout)
        counts = junit_counts(junit) if junit.exists() else (0, 0, 0)
    rows.append([title, "{} passed, {} failed, {} skipped".format(*counts)
                 + f" (exit {status})", seconds])
    return counts


def _figures(status, text):
    """A benchmark's last line, or why it has none."""
    figures = parse_last_line(text)
    if status == 0 and figures:
        return " ".join(f"{key}={value}" for key, value in figures.items())
    return f"failed (exit {status}): {text.strip().splitlines()[-1] if text.strip() else ''}"


if __name__ == "__main__":
    main()
