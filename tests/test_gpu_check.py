"""benchmarks/gpu_check.py's reading of its parts' outputs and its last line (the run itself needs a GPU)."""

import doctest
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402  (a benchmark script)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_gpu" name="a"/>
<testcase classname="tests.test_gpu" name="b"><failure message="x"/></testcase>
<testcase classname="tests.test_gpu" name="c"><error message="y"/></testcase>
<testcase classname="tests.test_gpu" name="d"><skipped message="needs a CUDA GPU"/></testcase>
<testcase classname="tests.test_gpu" name="e"/>
</testsuite></testsuites>"""


def test_its_docstring_examples():
    assert doctest.testmod(gpu_check).failed == 0


def test_counts_pytest_outcomes(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    assert gpu_check.junit_counts(tmp_path / "junit.xml") == (2, 2, 1)


def test_reads_a_benchmarks_last_line():
    text = "table\nspeedup: median over repetitions\nspeedup_exact=1.184 agreement_bf16_db=40.086\n\n"
    assert gpu_check.parse_last_line(text) == {"speedup_exact": "1.184",
                                              "agreement_bf16_db": "40.086"}
    assert gpu_check.parse_last_line("Traceback (most recent call last):\nValueError: x") == {}


def test_summary_line_with_everything_measured():
    report = {"fp32_vs_cpu_db": 58.6049, "fp16_vs_cpu_db": 53.2, "bf16_vs_cpu_db": 35.41,
              "train_fp16_scalar_finite": 1, "train_fp16_frame_finite": 1,
              "train_bf16_scalar_finite": 1, "train_tf32_frame_finite": 1, "nccl": 1}
    line = gpu_check.summary_line(report, 12, 0, 0)
    assert line == ("cuda_tests_passed=12/12 fp32_vs_cpu_db=58.60 fp16_vs_cpu_db=53.20 "
                    "bf16_vs_cpu_db=35.41 train_fp16_finite=1 train_bf16_finite=0 train_tf32_finite=1 "
                    "nccl=1")
    # The format the issue asks for, key by key; and what gpu_check reads back of it.
    assert [pair.split("=")[0] for pair in line.split()] == [
        "cuda_tests_passed", "fp32_vs_cpu_db", "fp16_vs_cpu_db", "bf16_vs_cpu_db",
        "train_fp16_finite", "train_bf16_finite", "train_tf32_finite", "nccl"]
    assert gpu_check.parse_last_line(f"table\n{line}\n")["train_bf16_finite"] == "0"


def test_summary_line_without_a_gpu_says_nothing_was_measured():
    assert gpu_check.summary_line({}, 0, 0, 12) == (
        "cuda_tests_passed=n/a fp32_vs_cpu_db=n/a fp16_vs_cpu_db=n/a bf16_vs_cpu_db=n/a "
        "train_fp16_finite=n/a train_bf16_finite=n/a train_tf32_finite=n/a nccl=n/a")
