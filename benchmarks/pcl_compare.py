"""Does PCL help? Baseline, noise head alone, NASS with scalar and with frame patches.

Trains four variants of the LibriMix recipe at equal steps and seeds, each
with the recipe itself (``recipes/LibriMix/separation/train.py``, one process
per run), and prints per variant:

* the PCL term relative to chance, epoch by epoch (``pcl_vs_chance``, from
  the recipe's train log; 1.00 = the patch embeddings tell nothing apart);
* ``pcl_grad_share``: the norm of the PCL term's gradient at the mask network
  over the separation term's, sampled every ``--grad_every`` steps;
* SI-SNRi on the held-out test split (the recipe's ``test_results.csv``, best
  checkpoint by validation SI-SNR), mean and standard deviation over seeds.

Variants (every other option the same):

* ``baseline``: ``--noise_output False --pcl_weight 0`` (plain separator);
* ``noise_head``: noise output, ``--pcl_weight 0``;
* ``nass_scalar``: noise output + PCL, ``--pcl_patch scalar`` (the reference's);
* ``nass_frame``: noise output + PCL, ``--pcl_patch frame``.

Default: a CPU-sized run on the synthetic-speech corpus of
:mod:`nass.data.tts` (built under ``--work_dir`` if ``--data_folder`` is not
given; needs ``flite`` and ``espeak-ng``): 12 runs of a small Sepformer
(N 64), 6 epochs of 160 two-second crops: about 70 minutes of one CPU core,
estimated from a measured epoch (120 one-second crops, 20 validation
mixtures and the test pass: 27 s of CPU on a Xeon, 2026-11-27); the default
was not run end to end. The same command on
Libri2Mix with a GPU::

    python benchmarks/pcl_compare.py --data_folder /data/Libri2Mix --device cuda \\
        --model release --epochs 50 --train_len 32000 --work_dir results/pcl-compare

Runs already finished in ``--work_dir`` with the same settings are reused
(a stopped comparison continues where it was); other settings there stop the
script unless ``--overwrite``. Ends with one ``key=value`` line.
"""

import argparse
import csv
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO_ROOT, last_line, machine_summary, use_checkout

use_checkout()

RECIPE = REPO_ROOT / "recipes" / "LibriMix" / "separation"
HPARAMS = RECIPE / "hparams" / "sepformer-libri2mix.yaml"
VARIANTS = {
    "baseline": ["--noise_output", "False", "--pcl_weight", "0"],
    "noise_head": ["--pcl_weight", "0"],
    "nass_scalar": ["--pcl_patch", "scalar"],
    "nass_frame": ["--pcl_patch", "frame"],
}
# Model sizes: overrides of the release Sepformer hparams.
MODELS = {
    "tiny": {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1, "inter_layers": 1,
             "nhead": 2, "d_ffn": 32, "chunk_size": 20, "pcl_proj_dim": 64,
             "pcl_num_patches": 32},
    "small": {"N_encoder_out": 64, "out_channels": 64, "intra_layers": 1, "inter_layers": 1,
              "nhead": 4, "d_ffn": 128, "chunk_size": 50, "pcl_proj_dim": 64,
              "pcl_num_patches": 64},
    "release": {},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", default=None,
                        help="a Libri2Mix folder; default: build the synthetic-speech corpus")
    parser.add_argument("--work_dir", default="pcl-compare", help="runs and the corpus go here")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--model", default="small", choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train_len", type=int, default=16000,
                        help="training crop in samples (training_signal_len)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--grad_every", type=int, default=50, help="pcl_grad_every")
    parser.add_argument("--n_train", type=int, default=160, help="mixtures of the built corpus")
    parser.add_argument("--n_eval", type=int, default=30, help="dev and test mixtures of it")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (CPU)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete runs in --work_dir made with other settings")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="after --: more recipe overrides, e.g. -- --batch_size 4")
    args = parser.parse_args(argv)
    args.extra = [a for a in args.extra if a != "--"]
    if args.epochs < 1 or not args.seeds:
        parser.error("--epochs must be >= 1 and --seeds non-empty")
    return args


def corpus(args, work):
    """The data folder: the given one, or the synthetic-speech corpus built under ``work``."""
    if args.data_folder:
        return Path(args.data_folder).resolve()
    folder = work / "tts-corpus" / "Libri2Mix"
    if (folder / "wav8k" / "min" / "metadata").is_dir():
        return folder
    from nass.data.tts import INSTALL_HINT, build_tts_librimix, missing_tools

    missing = missing_tools()
    if missing:
        sys.exit(f"pcl_compare: {', '.join(missing)} not found (needed to build the synthetic-"
                 f"speech corpus): {INSTALL_HINT}, or pass --data_folder")
    print(f"building the synthetic-speech corpus in {folder.parent} ...", flush=True)
    counts = {"train-100": args.n_train, "dev": args.n_eval, "test": args.n_eval}
    return build_tts_librimix(folder.parent, counts, seed=0, overwrite=True)


def settings(args, data):
    return {"data_folder": str(data), "model": args.model, "epochs": args.epochs,
            "train_len": args.train_len, "lr": args.lr, "grad_every": args.grad_every,
            "extra": args.extra, "hparams": str(HPARAMS)}


def check_work_dir(work, wanted, overwrite):
    """Refuses to mix runs made with other settings into one comparison."""
    path = work / "settings.json"
    if path.exists():
        have = json.loads(path.read_text())
        if have != wanted:
            if not overwrite:
                sys.exit(f"pcl_compare: {work} holds runs made with other settings ({path}); "
                         f"use another --work_dir or --overwrite")
            for run in work.glob("run-*"):
                shutil.rmtree(run)
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1))


def command(args, data, out, variant, seed):
    argv = [sys.executable, str(RECIPE / "train.py"), str(HPARAMS), "--data_folder", str(data),
            "--output_folder", str(out), "--seed", str(seed), "--N_epochs", str(args.epochs),
            "--training_signal_len", str(args.train_len), "--lr", str(args.lr),
            "--pcl_grad_every", str(args.grad_every), "--save_audio", "False",
            "--noprogressbar", "True", "--device", args.device]
    for key, value in MODELS[args.model].items():
        argv += [f"--{key}", str(value)]
    return argv + VARIANTS[variant] + args.extra


def train(args, data, work, variant, seed):
    """Runs (or reuses) one recipe run; returns its log's per-epoch stats and test SI-SNRi."""
    out = work / f"run-{variant}-seed{seed}"
    results = out / "test_results.csv"
    if not results.exists():
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        if args.device == "cpu":
            env["OMP_NUM_THREADS"] = str(args.threads)
        start, cpu = time.time(), _children_cpu()
        with open(work / f"run-{variant}-seed{seed}.log", "w") as log:
            done = subprocess.run(command(args, data, out, variant, seed), env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode != 0:
            sys.exit(f"pcl_compare: {variant} seed {seed} failed; see {log.name}")
        print(f"  {variant} seed {seed}: {time.time() - start:.0f} s wall, "
              f"{_children_cpu() - cpu:.0f} s CPU", flush=True)
    epochs = parse_log(out / "train_log.txt")
    with open(results, newline="") as fin:
        avg = [r for r in csv.DictReader(fin) if r["snt_id"] == "avg"][0]
    return {"epochs": epochs, "si_snri": float(avg["si-snr_i"]), "sdri": float(avg["sdr_i"])}


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_log(path):
    """``[{name: value}]`` per training epoch of a recipe train log."""
    epochs = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("epoch:"):
            continue
        stats = dict(re.findall(r"(train [\w-]+|valid [\w-]+): ([-+0-9.e]+)", line))
        epochs.append({k.replace(" ", "_"): float(v) for k, v in stats.items()})
    return epochs


def spread(values):
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def report(results, args):
    """The tables; returns the ``key=value`` figures."""
    figures = {}
    print("\nPCL term relative to chance, per epoch (mean over seeds; 1.00 = chance)")
    header = " ".join(f"{e + 1:>6}" for e in range(args.epochs))
    print(f"{'variant':<12} {header}   pcl_grad_share (mean of samples)")
    for variant, runs in results.items():
        curves = [[e.get("train_pcl_vs_chance") for e in r["epochs"]] for r in runs]
        if any(v is None for c in curves for v in c):
            print(f"{variant:<12} (no PCL term)")
            continue
        mean_curve = [statistics.fmean(c[e] for c in curves) for e in range(len(curves[0]))]
        shares = [e["train_pcl_grad_share"] for r in runs for e in r["epochs"]
                  if "train_pcl_grad_share" in e]
        share = statistics.fmean(shares) if shares else math.nan
        print(f"{variant:<12} " + " ".join(f"{v:6.3f}" for v in mean_curve) + f"   {share:.3g}")
        # The last third of training, as the recipe README reports it.
        tail = mean_curve[-max(1, len(mean_curve) // 3):]
        figures[f"pcl_vs_chance_{variant}"] = statistics.fmean(tail)
        figures[f"pcl_grad_share_{variant}"] = f"{share:.3g}"
    print(f"\nHeld-out test SI-SNRi (dB), best-validation checkpoint, over seeds {args.seeds}")
    print(f"{'variant':<12} {'mean':>7} {'std':>6}   per seed")
    for variant, runs in results.items():
        mean, std = spread([r["si_snri"] for r in runs])
        print(f"{variant:<12} {mean:7.2f} {std:6.2f}   "
              + " ".join(f"{r['si_snri']:.2f}" for r in runs))
        figures[f"si_snri_{variant}"] = mean
        figures[f"si_snri_std_{variant}"] = std
    return figures


def main(argv=None):
    args = parse_args(argv)
    print(machine_summary(), flush=True)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = corpus(args, work)
    check_work_dir(work, settings(args, data), args.overwrite)
    threads = f", {args.threads} thread(s) per run" if args.device == "cpu" else ""
    print(f"data {data}; model {args.model}; {args.epochs} epochs; crop {args.train_len}; "
          f"seeds {args.seeds}; device {args.device}{threads}", flush=True)
    start = time.time()
    results = {v: [] for v in args.variants}
    # Seed by seed, so that a stopped comparison has every variant at the seeds it finished.
    for seed in args.seeds:
        for variant in args.variants:
            results[variant].append(train(args, data, work, variant, seed))
    figures = report(results, args)
    print(f"\nwall time {time.time() - start:.0f} s")
    print(last_line(seeds=len(args.seeds), epochs=args.epochs, model=args.model, **figures))


if __name__ == "__main__":
    main()
