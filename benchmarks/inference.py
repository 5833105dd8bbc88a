"""``nass separate`` on long recordings, and the model's fast paths side by side.

    python benchmarks/inference.py                       # 1, 2, 5 and 10 minutes
    python benchmarks/inference.py --minutes 1 10 --chunk-seconds 8 --precision bf16
    python benchmarks/inference.py --compare             # attention, precision, batches: one window
    python benchmarks/inference.py --compare --device cuda --extra compile --batch 4
    python benchmarks/inference.py --minutes 10 --device cuda --precision bf16 --compile
    python benchmarks/inference.py --agreement a.wav b.wav   # nass separate bf16 vs fp32
    python benchmarks/inference.py --minutes 1 --onnx      # also the ONNX model, side by side
    python benchmarks/inference.py --memory --window-seconds 8   # a window's memory, estimated and measured

The model is the release-size Sepformer-NASS of ``sepformer-libri2mix.yaml``
with random weights (a checkpoint is written to a temporary folder): speed and
memory do not depend on the weights. The recordings are the real speech and
noise shipped in ``nass/assets`` tiled to each length, 8 kHz. Every length is
separated by the real command (``python -m nass.cli separate``) in its own
process, whose peak resident memory is read from the kernel (``wait4``), so
each figure covers model loading, reading, separating and writing.

With ``--onnx`` the model is also exported (``nass export --format onnx``,
checked against PyTorch with ONNX Runtime; the export time and the check are
printed) and every length is separated by ``nass separate --onnx`` right
after ``nass separate``, with the same windows and thread count.

Each run reports wall, user and system seconds, minor page faults and peak
resident memory; ``--against CHECKOUT`` first runs that (earlier) checkout's
``nass separate`` on every length, as a baseline side by side.

The last line is ``rtf_10min=<wall / audio seconds> peak_rss_mib_10min=<MiB>
system_share_10min=<system / CPU seconds>`` (for the last length given), plus
``against_rtf=<...> wall_over_against=<wall ratio>`` with ``--against`` and
``onnx_rtf=<...> onnx_over_pytorch=<wall ratio>`` with ``--onnx``.

``--compare`` runs the model itself (no files) on one window of the same
recording (``--window-seconds``, 30 by default: ``nass separate``'s window),
in one process, the variants alternating repetition by repetition after
one warm-up each:

a. SpeechBrain's attention as shipped, fp32 (``fused_attention: False``);
b. the exact fused path, fp32 (:mod:`nass.model.attention`, the recipes' default);
c. bf16 (:func:`nass.model.precision.set_precision` on b), left out (and
   said so) on a CPU without bf16 matrix kernels, where it would take many
   times fp32's time;
d. optionally (``--extra int8``): b with its linear layers dynamically
   quantised to int8 (CPU only);
e. optionally (``--extra compile``): b through ``torch.compile`` on ``--batch``
   windows at once, one shape (its first call, compiling, timed and printed apart);
f. fp16, on CUDA (``--device cuda``) and on a CPU with native fp16 matrix
   products (:func:`nass.model.precision.cpu_has_fp16_matmul`: AVX512-FP16 or AMX-FP16);
g. b on ``--batch`` windows at once (4 by default), and h. c likewise where c runs;
i. on the CPU, b with its dual-path blocks in slices of sequences, as ``nass
   separate`` runs it there (:mod:`nass.inference.slices`).

Times are per window (a batched call's time over its windows); agreement
is the first window's outputs against a's.

All variants have the same weights. It prints the CPU's bf16/AMX features
and the rate of one of the model's linear layers in each precision (the
most that bf16 or fp16 can gain on this hardware), a table of medians,
speedups over (a) and each variant's agreement with (a) (largest absolute
difference; lowest SI-SNR over the outputs, in dB), and
the last line ``speedup_exact=<a/b> max_abs_diff_exact=<max |a-b|>
speedup_bf16=<a/c> agreement_bf16_db=<min over outputs of SI-SNR(c, a)>``
where c ran, and likewise ``_fp16`` (f), ``_batched`` (g), ``_batched_bf16`` (h),
``_compiled`` (e), ``_sliced`` (i) for those that ran.

``--memory`` checks :mod:`nass.inference.memory`'s estimate of a window's memory on
the release-size Sepformer (fused attention, and SpeechBrain's explicit
one) and DPRNN of the recipes, whole and in slices as ``nass separate`` runs
them on the CPU (:mod:`nass.inference.slices`), fp32 and bf16, each in a fresh
process, one thread: the growth of the process's peak resident memory over one forward
pass on a ``--window-seconds`` window (:func:`nass.inference.memory.measured_forward_bytes`)
next to :func:`nass.inference.memory.forward_bytes`; last line
``memory_ratio_min=<estimate / measured> memory_ratio_max=<...>``.

``--agreement FILE...`` runs ``nass separate`` (same random-weight model,
default window) with ``--precision fp32`` and with ``bf16`` on each file,
and prints every output's SI-SNR of bf16 against fp32, the wall time and
peak memory of each process; last line ``agreement_bf16_db=<min over files
and outputs>``.
"""

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from _common import (
    REPO_ROOT,
    format_table,
    interleave,
    last_line,
    machine_summary,
    paired_ratio,
    use_checkout,
)

use_checkout()

import torch  # noqa: E402
from speechbrain.utils.checkpoints import Checkpointer  # noqa: E402

import nass  # noqa: E402
from nass.model.loading import load_model  # noqa: E402
from memory_probe import measure_windows  # noqa: E402
from nass.metrics import si_snr  # noqa: E402
from nass.model.precision import (SlowPrecisionWarning, precision_dtype, set_precision,  # noqa: E402
                                  set_tf32)
from nass.inference.slices import SLICE_ELEMENTS, in_slices  # noqa: E402

HPARAMS = REPO_ROOT / "recipes" / "LibriMix" / "separation" / "hparams" / "sepformer-libri2mix.yaml"
ASSETS = Path(nass.__file__).parent / "assets"
RATE = 8000


def long_mixture(minutes, seed=0):
    """Two talkers and noise from the shipped recordings, tiled to ``minutes``."""
    n = int(minutes * 60 * RATE)
    rng = np.random.default_rng(seed)

    def tiled(paths):
        parts = [sf.read(p, dtype="float32")[0] for p in paths]
        out = np.concatenate([parts[i % len(parts)] for i in range(n // min(map(len, parts)) + 2)])
        return np.roll(out, int(rng.integers(RATE)))[:n]

    speech = sorted((ASSETS / "speech").glob("*.wav"))
    mix = 0.5 * tiled(speech[::2]) + 0.5 * tiled(speech[1::2]) + 0.3 * tiled(sorted((ASSETS / "noise").glob("*.wav")))
    return (0.9 * mix / np.abs(mix).max()).astype(np.float32)


@dataclass
class Run:
    """What one ``nass separate`` process took, from the kernel (``wait4``)."""

    wall: float
    peak_rss_mib: float
    user: float
    system: float
    minor_faults: int

    @property
    def system_share(self):
        """The kernel's share of the process's CPU time."""
        return self.system / max(self.user + self.system, 1e-9)


def run_separate(wav, model, out_dir, chunk_seconds, precision="fp32", options=(), checkout=None):
    """One ``nass separate`` process on ``wav``: a :class:`Run`.

    ``model`` is a checkpoint folder, or an ``.onnx`` file (``--onnx``, fp32
    only); ``options`` more of ``nass separate``'s (``--device``, ``--batch-size``, ...).
    ``checkout``: run that checkout's ``nass`` (and its recipe's yaml) instead of this one's.
    """
    if str(model).endswith(".onnx"):
        source = ["--onnx", str(model)]
    else:
        hparams = HPARAMS if checkout is None else Path(checkout) / HPARAMS.relative_to(REPO_ROOT)
        source = ["--hparams", str(hparams), "--checkpoint", str(model), "--precision", precision,
                  *options]
    cmd = [sys.executable, "-m", "nass.cli", "separate", *source,
           "--out-dir", str(out_dir), "--overwrite", str(wav)]
    if chunk_seconds is not None:
        cmd += ["--chunk-seconds", str(chunk_seconds)]
    env, cwd = None, None
    if checkout is not None:
        # `python -m` puts its working folder first on the path, then PYTHONPATH.
        cwd = Path(checkout).resolve()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(cwd), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"nass separate failed on {wav}: {proc.stderr.read().decode()[-2000:]}")
    return Run(wall, usage.ru_maxrss / 1024, usage.ru_utime, usage.ru_stime, usage.ru_minflt)


# /proc/cpuinfo flags that decide how fast bf16 (and int8) matmuls are.
CPU_FEATURES = ("amx_tile", "amx_bf16", "amx_int8", "avx512f", "avx512_bf16", "avx512_vnni",
                "avx512_fp16", "avx_vnni")


def cpu_features():
    """``{flag: present}`` for :data:`CPU_FEATURES`, from /proc/cpuinfo (all False elsewhere)."""
    flags = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            for line in fin:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {name: name in flags for name in CPU_FEATURES}


def compare_variants(extra, device, batch, seed=0):
    """``{name: (model, windows per call)}``: (a) SpeechBrain's attention, (b) fused, then the others.

    (c) bf16 where the precision rule has no objection (on a CPU without bf16
    kernels it is left out and said so: it would take many times fp32's
    time); (g) b on ``batch`` windows at once; fp16 on CUDA and on a CPU with
    native fp16 matrix products; with ``compile`` in ``extra``, (e) b through
    ``torch.compile`` on ``batch`` windows, one shape.
    """
    torch.manual_seed(seed)
    shipped = load_model(HPARAMS, {"fused_attention": False}).eval().to(device)
    fused = load_model(HPARAMS).eval().to(device)
    fused.load_state_dict(shipped.state_dict(), strict=True)
    variants = {
        "a: SpeechBrain attention, fp32": (shipped, 1),
        "b: fused attention, fp32": (fused, 1),
    }
    if runs_fast(device, "bf16"):
        variants["c: fused attention, bf16"] = (set_precision(copy.deepcopy(fused), "bf16"), 1)
    else:
        print("c: bf16 left out: this CPU has no bf16 matrix kernels, so bf16 would take many "
              "times fp32's time (nass.model.precision)", flush=True)
    if device.type == "cpu":
        variants["i: fused, fp32, in slices"] = (in_slices(copy.deepcopy(fused)), 1)
    if batch > 1:
        variants[f"g: fused, fp32, batch {batch}"] = (fused, batch)
        if "c: fused attention, bf16" in variants:
            variants[f"h: fused, bf16, batch {batch}"] = (variants["c: fused attention, bf16"][0],
                                                          batch)
    if runs_fast(device, "fp16"):
        variants["f: fused attention, fp16"] = (set_precision(copy.deepcopy(fused), "fp16"), 1)
    if "int8" in extra:
        variants["d: fused, int8 dynamic linear"] = (torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(fused), {torch.nn.Linear}, dtype=torch.qint8), 1)
    if "compile" in extra:
        variants[f"e: fused, torch.compile, batch {batch}"] = (
            torch.compile(fused, dynamic=False), batch)
    return variants


def runs_fast(device, precision):
    """Whether :func:`nass.model.precision.precision_dtype` takes ``precision`` on ``device`` without objection."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        try:
            precision_dtype(precision, device)
        except (ValueError, SlowPrecisionWarning):
            return False
    return True


def matmul_rates(device, tokens=8000, reps=5):
    """``{dtype name: GFLOP/s}`` of one feed-forward linear layer of the model (256 -> 1024).

    What bf16 and fp16 can gain on this hardware at most: the linear layers
    are most of the Sepformer's time. Each dtype alternates with the others,
    median of ``reps``.
    """
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if runs_fast(device, "fp16"):
        dtypes["fp16"] = torch.float16
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(tokens, 256, generator=gen), torch.randn(1024, 256, generator=gen) / 16
    cases = {}
    for name, dtype in dtypes.items():
        xd, wd = x.to(device, dtype), w.to(device, dtype)
        cases[name] = lambda xd=xd, wd=wd: torch.nn.functional.linear(xd, wd)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    timing = interleave(cases, reps, sync=sync)
    flops = 2 * tokens * 256 * 1024
    return {name: flops / statistics.median(timing.seconds[name]) / 1e9 for name in dtypes}


def compare(args):
    """Times the variants on one window, alternating; prints the table and the last line."""
    features = cpu_features()
    print("CPU features: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in features.items())
          + f"; torch CPU capability {torch.backends.cpu.get_cpu_capability()}")
    device = torch.device(args.device)
    set_tf32("fp32", device)  # IEEE fp32, as nass separate runs it: import speechbrain turned TF32 on
    rates = matmul_rates(device)
    print("one linear layer [8000, 256] x [256, 1024]: "
          + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items())
          + " (bf16 and fp16 can gain at most their rate over fp32's)", flush=True)
    window = torch.from_numpy(long_mixture(args.window_seconds / 60))[None].to(device)
    variants = compare_variants(args.extra, device, args.batch)
    print(f"release-size Sepformer-NASS (random weights), one {args.window_seconds:g} s window "
          f"at {RATE} Hz, {device}; {args.reps} alternating repetitions after "
          f"{args.warmup} warm-up(s) each", flush=True)

    def runner(model, windows):
        batch = window.expand(windows, -1).contiguous()

        def run():
            with torch.no_grad():
                return model(batch)[:1].float().cpu()
        return run

    def progress(rep, seconds):
        times = ", ".join(f"{name.split(':')[0]} {s:.1f} s" for name, s in seconds.items())
        print(f"  rep {rep + 1}/{args.reps}: {times}", file=sys.stderr, flush=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    for name, (model, windows) in variants.items():
        if "compile" in name:  # its first call compiles: timed apart, once
            start = time.perf_counter()
            runner(model, windows)()
            print(f"{name.split(':')[0]}: first call, compiling included: "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    timing = interleave({name: runner(*v) for name, v in variants.items()}, args.reps,
                        warmup=args.warmup, sync=sync, progress=progress)
    # Seconds per window: a batched variant's calls separate `windows` at once.
    for name, (_, windows) in variants.items():
        timing.seconds[name] = [t / windows for t in timing.seconds[name]]
    names = list(variants)
    base_times, base_out = timing.seconds[names[0]], timing.results[names[0]]
    rows, agreement = [], {}
    for name in names:
        out = timing.results[name]
        max_diff = float((out - base_out).abs().max())
        agreement[name] = (max_diff, float(si_snr(out[0].T, base_out[0].T).min()))
        rows.append([name, f"{statistics.median(timing.seconds[name]):.2f}",
                     f"{min(timing.seconds[name]):.2f}",
                     f"{paired_ratio(base_times, timing.seconds[name]):.2f}",
                     f"{max_diff:.2e}", f"{agreement[name][1]:.1f}" if name != names[0] else "-"])
    print(format_table(["variant", "median s/window", "min s/window", "speedup vs a",
                        "max |x-a|", "min SI-SNR vs a dB"], rows))
    print("speedup: median over repetitions of a's time per window / the variant's, run side "
          "by side")
    figures = dict(
        speedup_exact=paired_ratio(base_times, timing.seconds[names[1]]),
        max_abs_diff_exact=f"{agreement[names[1]][0]:.2e}",
    )
    for key, letter in (("bf16", "c"), ("fp16", "f"), ("batched", "g"), ("batched_bf16", "h"),
                        ("compiled", "e"), ("sliced", "i")):
        name = next((n for n in names if n.startswith(f"{letter}:")), None)
        if name is not None:
            figures[f"speedup_{key}"] = paired_ratio(base_times, timing.seconds[name])
            figures[f"agreement_{key}_db"] = agreement[name][1]
    print(last_line(**figures))


def memory(args):
    """:func:`nass.inference.memory.forward_bytes` against the measured growth of one forward pass."""
    samples = round(args.window_seconds * RATE)
    dprnn = HPARAMS.with_name("dprnn-libri2mix.yaml")
    variants = [("Sepformer", HPARAMS, {}, None),
                ("Sepformer, SpeechBrain attention", HPARAMS, {"fused_attention": False}, None),
                ("DPRNN", dprnn, {}, None),
                ("Sepformer, in slices", HPARAMS, {}, SLICE_ELEMENTS),
                ("DPRNN, in slices", dprnn, {}, SLICE_ELEMENTS)]
    rows, ratios = [], []
    for name, hparams, overrides, sliced in variants:
        for precision in ("fp32", "bf16"):
            # Each in a fresh process of its own.
            measured, estimate = measure_windows(
                {name: (hparams, overrides, precision, samples, sliced)})[name]
            ratios.append(estimate / measured)
            rows.append([name, precision, f"{measured / 2**20:.0f}", f"{estimate / 2**20:.0f}",
                         f"{ratios[-1]:.3f}"])
            print(f"  {name} {precision}: measured {measured / 2**20:.0f} MiB, "
                  f"estimated {estimate / 2**20:.0f} MiB", flush=True)
    print(f"one {args.window_seconds:g} s window at {RATE} Hz, random weights, 1 thread")
    print(format_table(["model", "precision", "measured MiB", "estimated MiB", "ratio"], rows))
    print(last_line(memory_ratio_min=min(ratios), memory_ratio_max=max(ratios)))


def agreement(args, checkpoint, out_dir):
    """``nass separate`` in fp32 and bf16 on ``args.agreement``: SI-SNR of bf16 vs fp32 per output."""
    rows, worst = [], float("inf")
    for wav in map(Path, args.agreement):
        outputs, stats = {}, {}
        for precision in ("fp32", "bf16"):
            folder = out_dir / precision
            stats[precision] = run_separate(wav, checkpoint, folder, args.chunk_seconds, precision)
            outputs[precision] = {
                p.stem[len(wav.stem) + 1:]: torch.from_numpy(sf.read(p, dtype="float32")[0])
                for p in sorted(folder.glob(f"{wav.stem}_*.wav"))
            }
        for name, exact in outputs["fp32"].items():
            db = float(si_snr(outputs["bf16"][name], exact))
            worst = min(worst, db)
            rows.append([wav.name, name, f"{db:.1f}"]
                        + [f"{stats[p].wall:.1f} / {stats[p].peak_rss_mib:.0f}"
                           for p in ("fp32", "bf16")])
    print(format_table(["file", "output", "SI-SNR bf16 vs fp32 dB", "fp32 s / MiB",
                        "bf16 s / MiB"], rows))
    print(last_line(agreement_bf16_db=worst))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="window length (default: nass separate's)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"],
                        help="nass separate --precision (default fp32)")
    parser.add_argument("--compare", action="store_true",
                        help="time SpeechBrain's attention, the fused one and bf16 on one window")
    parser.add_argument("--window-seconds", type=float, default=30.0,
                        help="--compare, --memory: the window's length (default 30)")
    parser.add_argument("--memory", action="store_true",
                        help="a window's memory: nass.inference.memory's estimate against the measured")
    parser.add_argument("--reps", type=int, default=3,
                        help="--compare: timed repetitions per variant (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="--compare: untimed runs per variant first (default 1)")
    parser.add_argument("--extra", nargs="*", default=[], choices=["int8", "compile"],
                        help="--compare: more variants")
    parser.add_argument("--batch", type=int, default=4,
                        help="--compare: windows per call of the batched and compiled variants "
                             "(default 4; 1 leaves the batched ones out)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="nass separate --batch-size (default: nass separate's)")
    parser.add_argument("--compile", action="store_true", help="nass separate --compile")
    parser.add_argument("--agreement", nargs="+", metavar="WAV",
                        help="nass separate these files in fp32 and in bf16 and compare")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the model runs: --compare's, and nass separate --device "
                             "(default cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads, here and in the nass separate runs "
                             "(default: torch's choice)")
    parser.add_argument("--against", metavar="CHECKOUT",
                        help="also run the nass separate of this checkout of nass (e.g. a git "
                             "worktree of an earlier commit) on every length, first, as the "
                             "baseline: its own recipe yaml, the same checkpoint")
    parser.add_argument("--onnx", action="store_true",
                        help="also export the model to ONNX and time nass separate --onnx")
    args = parser.parse_args()
    if args.onnx and (args.precision != "fp32" or args.device != "cpu" or args.compile):
        parser.error("--onnx: the ONNX model runs in fp32 on the CPU, uncompiled; leave out "
                     "--precision, --device and --compile")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.device == "cuda" and "int8" in args.extra:
        parser.error("--extra int8: dynamic quantisation runs on the CPU only")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        # The `nass separate` processes it starts read the count from their environment.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    print(machine_summary())
    if args.compare:
        compare(args)
        return
    if args.memory:
        memory(args)
        return
    if not args.agreement:
        print(f"nass separate --precision {args.precision}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(HPARAMS)
        Checkpointer(tmp / "save", {"encoder": model.encoder, "masknet": model.masknet,
                                    "decoder": model.decoder}).save_checkpoint(meta={"si-snr": 0.0})
        if args.agreement:
            agreement(args, tmp / "save", tmp / "out")
            return
        backends = {}
        if args.against:
            backends["against"] = (tmp / "save", Path(args.against))
        backends["pytorch"] = (tmp / "save", None)
        if args.onnx:
            backends["onnx"] = (export(model, tmp / "separator.onnx"), None)
        for minutes in args.minutes:
            wav = tmp / f"mix_{minutes:g}min.wav"
            sf.write(wav, long_mixture(minutes), RATE, subtype="PCM_16")
            seconds = minutes * 60
            runs = {}
            for name, (source, checkout) in backends.items():
                # An earlier checkout knows none of this round's options but --device.
                options = ["--device", args.device] if checkout else separate_options(args)
                run = runs[name] = run_separate(wav, source, tmp / "out", args.chunk_seconds,
                                                args.precision, options, checkout)
                print(f"  {minutes:g} min, {name}: {run.wall:.1f} s, RTF {run.wall / seconds:.2f}, "
                      f"user {run.user:.0f} s, system {run.system:.0f} s, peak RSS "
                      f"{run.peak_rss_mib:.0f} MiB", flush=True)
            rows += [[f"{minutes:g}", name, f"{run.wall:.1f}", f"{run.wall / seconds:.2f}",
                      f"{run.user:.0f}", f"{run.system:.0f}", f"{run.system_share:.3f}",
                      f"{run.minor_faults / 1e6:.2f}", f"{run.peak_rss_mib:.0f}",
                      f"{run.wall / runs['pytorch'].wall:.2f}"] for name, run in runs.items()]
    if args.against:
        print(f"against: nass separate of {args.against} (its recipe yaml, the same checkpoint)")
    print(format_table(["minutes", "model", "wall s", "RTF", "user s", "system s", "system share",
                        "minor faults M", "peak RSS MiB", "x pytorch"], rows))
    # The figures of the last length given.
    run = runs["pytorch"]
    figures = {"rtf_10min": run.wall / seconds, "peak_rss_mib_10min": run.peak_rss_mib,
               "system_share_10min": run.system_share}
    if "against" in runs:
        figures.update(against_rtf=runs["against"].wall / seconds,
                       wall_over_against=run.wall / runs["against"].wall)
    if "onnx" in runs:
        figures.update(onnx_rtf=runs["onnx"].wall / seconds,
                       onnx_over_pytorch=runs["onnx"].wall / run.wall)
    print(last_line(**figures))


def separate_options(args):
    """The ``nass separate`` options that ``args`` passes on."""
    options = ["--device", args.device]
    if args.batch_size is not None:
        options += ["--batch-size", str(args.batch_size)]
    if args.compile:
        options.append("--compile")
    return options


def export(model, path):
    """``model`` as ONNX (``nass export --format onnx``'s function); prints time and check."""
    from nass.export.onnx import export_onnx

    start = time.perf_counter()
    report = export_onnx(model, path, RATE, window_seconds=2.0)
    checked = ", ".join(f"{n} samples {db:.1f} dB" for n, db in
                        zip(report["lengths"], report["min_sdr_db"]))
    print(f"ONNX export {time.perf_counter() - start:.0f} s; ONNX Runtime vs PyTorch, worst "
          f"output: {checked}", flush=True)
    return path


if __name__ == "__main__":
    main()
