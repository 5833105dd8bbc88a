"""``nass demo``: the whole pipeline in minutes on a CPU, with no data and no network.

It mixes the speech and noise shipped in ``nass/assets`` the LibriMix way into
a small noisy Libri2Mix, trains a small NASS Sepformer with the LibriMix recipe
itself (its hparams file ships in the package), summarises ``test_results.csv``
against the unprocessed mixture, separates a test mixture and plots it. It
writes only into an ``out_dir`` that is new, empty or an earlier demo's (marked
by a ``.nass-demo`` file). Four speech excerpts and minutes of training: the
numbers show that the pipeline runs, not how well NASS separates.
"""

import csv
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from nass.audio import output_paths, save_sources
from nass.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, report
from nass.cli.plot import plot_spectrograms
from nass.data.mixing import NOISE_LUFS, SPEECH_LUFS, to_16_bits, to_loudness, without_clipping
from nass.inference import Separator
from nass.model.loading import recipe_hparams
from nass.training.recipe import Interrupted, run

ASSETS = Path(__file__).resolve().parents[1] / "assets"
RECIPE_HPARAMS = recipe_hparams()
# Marks an out_dir as the demo's own, so that a rerun may replace what is in it.
MARKER = ".nass-demo"
SAMPLE_RATE = 8000
# Mixtures per split and the longest training mixture, in seconds.
CORPUS = {"train-100": 24, "dev": 3, "test": 3}
QUICK_CORPUS = {"train-100": 4, "dev": 2, "test": 2}
TRAIN_SECONDS, QUICK_TRAIN_SECONDS = 2.0, 1.0

# A small noise-aware Sepformer with PCL: the release's architecture scaled
# down to train in minutes on a CPU (the release has N=256, 8+8 layers).
MODEL = {
    "N_encoder_out": 64, "out_channels": 64, "intra_layers": 1, "inter_layers": 1,
    "nhead": 4, "d_ffn": 128, "chunk_size": 50,
}
QUICK_MODEL = {
    "N_encoder_out": 16, "out_channels": 16, "intra_layers": 1, "inter_layers": 1,
    "nhead": 2, "d_ffn": 32, "chunk_size": 20,
}
# PCL's patch embedding is trained with the model but not part of it (not used to separate).
PCL = {"pcl_proj_dim": 32, "pcl_num_patches": 64}
QUICK_PCL = {"pcl_proj_dim": 16, "pcl_num_patches": 16}
# A higher learning rate than the release's 1.5e-4: there are minutes, not days.
TRAINING = {"lr": 0.001, "save_audio": False}


def demo_command(args):
    """``nass demo``: the whole pipeline on shipped data (see :mod:`nass.cli.demo`)."""
    try:
        run_demo(args.out_dir, minutes=args.minutes, seed=args.seed, epochs=args.epochs,
                 quick=args.quick)
    except DemoError as err:
        report(str(err), command="demo")
        return EXIT_FAILED
    except Interrupted as err:   # Ctrl-C while the recipe trains: what it kept
        report(str(err), command="demo", level="error")
        return EXIT_INTERRUPTED
    return EXIT_OK



class DemoError(RuntimeError):
    """The demo cannot run here (e.g. its out_dir holds someone else's files)."""


def _check_options(minutes, epochs, seed):
    """Refuses a training length that trains nothing, or a seed numpy refuses, before anything is made."""
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                               or epochs < 1):
        raise DemoError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) \
            or not 0 < minutes < float("inf"):
        raise DemoError(f"--minutes must be a number of minutes > 0, got {minutes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DemoError(f"--seed must be a whole number >= 0, got {seed!r}")


def run_demo(out_dir="nass-demo", minutes=2.0, seed=0, epochs=None, quick=False):
    """Builds the corpus, trains, evaluates, separates and plots, all under ``out_dir``.

    Arguments
    ---------
    out_dir : str or Path
        Gets ``data/``, ``train/`` (the recipe's output folder), ``separated/``
        and ``results.md``. Must be new, empty, or an earlier demo's.
    minutes : float
        About how long training may take, when ``epochs`` is None.
    seed : int
        Seed of the corpus and of the recipe.
    epochs : int, optional
        Train exactly this many epochs.
    quick : bool
        A tiny corpus and model (for tests: seconds instead of minutes).

    Returns
    -------
    dict
        Paths of what was made: ``corpus``, ``train``, ``results``, ``mixture``,
        ``outputs`` (list), ``figure``.
    """
    _check_options(minutes, epochs, seed)
    out_dir = claim_out_dir(out_dir)
    model = QUICK_MODEL if quick else MODEL
    corpus = build_corpus(out_dir / "data", seed=seed,
                          counts=QUICK_CORPUS if quick else CORPUS,
                          train_seconds=QUICK_TRAIN_SECONDS if quick else TRAIN_SECONDS)
    print(f"nass demo: corpus written to {corpus}")

    train_dir = out_dir / "train"
    if train_dir.exists():
        shutil.rmtree(train_dir)  # a new demo, not a resumed one: the corpus was just rebuilt
    overrides = {**model, **(QUICK_PCL if quick else PCL), **TRAINING, "seed": seed,
                 "training_signal_len": int((QUICK_TRAIN_SECONDS if quick else TRAIN_SECONDS)
                                            * SAMPLE_RATE)}
    trained = 0
    if epochs is None:
        started = time.monotonic()
        _train(corpus, train_dir, overrides, n_epochs=1)
        seconds_per_epoch = time.monotonic() - started
        trained = 1
        epochs = max(1, int(minutes * 60 // seconds_per_epoch))
        print(f"nass demo: one epoch took {seconds_per_epoch:.0f} s; training to {epochs} "
              f"epoch(s) to fit {minutes:g} minute(s)")
    if epochs > trained:
        _train(corpus, train_dir, overrides, n_epochs=epochs)  # resumes after the timed epoch

    table = results_table(train_dir / "test_results.csv")
    results = out_dir / "results.md"
    results.write_text(table + "\n")

    mixtures = sorted((corpus / "wav8k" / "min" / "test" / "mix_both").glob("*.wav"))
    separated = out_dir / "separated"
    separated.mkdir(parents=True, exist_ok=True)
    mixture = separated / mixtures[0].name
    shutil.copyfile(mixtures[0], mixture)
    separator = Separator.from_hparams(RECIPE_HPARAMS, train_dir / "save", overrides=model)
    sources = separator.separate_file(mixture)
    paths = output_paths(mixture, separator.source_names)
    save_sources(sources, SAMPLE_RATE, paths, overwrite=True)
    figure = plot_spectrograms([mixture, *paths.values()],
                               separated / f"{mixture.stem}_spectrograms.png")

    print(f"\n{table}\n")
    print(f"nass demo: everything is under {out_dir}")
    print(f"  corpus             {corpus}")
    print(f"  training run       {train_dir} (train_log.txt, save/ checkpoints, test_results.csv)")
    print(f"  results table      {results}")
    print(f"  separated mixture  {mixture}")
    for path in paths.values():
        print(f"                     {path}")
    print(f"  spectrograms       {figure}")
    print(f"  checkpoint used    {separator.checkpoint}")
    n_params = sum(p.numel() for p in separator.model.parameters())
    print(
        f"\nThis is a smoke demo, not a benchmark: the model is small ({n_params / 1e6:.2f} M "
        "parameters; the release's has 25.7 M), trained for minutes on a CPU, on mixtures of "
        "four short speech excerpts and two noise recordings that the test mixtures reuse. The "
        "numbers show that the pipeline runs, not how well NASS separates; for that, train the "
        "recipe on Libri2Mix."
    )
    return {"corpus": corpus, "train": train_dir, "results": results, "mixture": mixture,
            "outputs": list(paths.values()), "figure": figure}


def claim_out_dir(out_dir):
    """``out_dir`` resolved and marked as the demo's; refuses a folder holding other files.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "notes.txt").write_text("mine")
    ...     claim_out_dir(tmp)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nass.cli.demo.DemoError: ... holds files that nass demo did not make ...
    """
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise DemoError(f"--out-dir {out_dir} is a file; give a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise DemoError(
            f"--out-dir {out_dir} holds files that nass demo did not make (it has no {MARKER}); "
            f"a demo replaces its data/ and train/ folders, so give a new or empty folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("Made by nass demo: a rerun replaces data/, train/, separated/ "
                                  "and results.md here.\n")
    return out_dir


def build_corpus(root, seed=0, counts=None, train_seconds=TRAIN_SECONDS):
    """Writes a small noisy Libri2Mix from the shipped audio; returns its ``Libri2Mix`` folder.

    Each mixture takes two different speech excerpts and one noise, at random
    offsets and levels. Training mixtures are at most ``train_seconds`` long;
    dev and test ones are as long as their shorter excerpt. Sources are
    rounded to 16 bits before summing, so ``mix_both == s1 + s2 + noise``
    holds in the files.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = build_corpus(tmp, counts={"train-100": 1, "dev": 1, "test": 1})
    ...     sorted(p.name for p in (folder / "wav8k" / "min" / "test").iterdir())
    ['mix_both', 'mix_clean', 'noise', 's1', 's2']
    """
    counts = CORPUS if counts is None else counts
    speech = [_read(p) for p in sorted((ASSETS / "speech").glob("*.wav"))]
    noises = [_read(p) for p in sorted((ASSETS / "noise").glob("*.wav"))]
    if len(speech) < 2 or not noises:
        raise DemoError(f"the demo audio is missing from {ASSETS} (reinstall nass)")
    corpus = Path(root).resolve() / "Libri2Mix"
    if corpus.exists():
        shutil.rmtree(corpus)  # a rerun with another seed must not keep old mixtures
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        folder = corpus / "wav8k" / "min" / split
        limit = train_seconds if split.startswith("train") else None
        for index in range(count):
            first, second = rng.choice(len(speech), size=2, replace=False)
            noise = noises[rng.integers(len(noises))]
            s1, s2, n = _mixture_sources(rng, speech[first], speech[second], noise, limit)
            name = f"{split}_{index:03d}_e{first}_e{second}.wav"
            for sub, signal in (("s1", s1), ("s2", s2), ("noise", n), ("mix_clean", s1 + s2),
                                ("mix_both", s1 + s2 + n)):
                (folder / sub).mkdir(parents=True, exist_ok=True)
                sf.write(str(folder / sub / name), signal, SAMPLE_RATE, subtype="PCM_16")
    return corpus


def _mixture_sources(rng, speech1, speech2, noise, limit_seconds):
    """Excerpts of two speakers and a noise, of one length, mixed the LibriMix way (:mod:`nass.data.mixing`)."""
    length = min(len(speech1), len(speech2), len(noise))
    if limit_seconds is not None:
        length = min(length, int(limit_seconds * SAMPLE_RATE))
    signals = []
    for source, levels in ((speech1, SPEECH_LUFS), (speech2, SPEECH_LUFS), (noise, NOISE_LUFS)):
        start = rng.integers(len(source) - length + 1)
        signals.append(to_loudness(source[start:start + length], rng.uniform(*levels), SAMPLE_RATE))
    return to_16_bits(without_clipping(signals))


def results_table(csv_path):
    """A Markdown table of the mixture's and the model's mean test scores, in dB."""
    with open(csv_path, newline="") as fin:
        rows = [r for r in csv.DictReader(fin) if r["snt_id"] != "avg"]
    if not rows:
        raise DemoError(f"{csv_path} has no test results")

    def mean(key):
        return float(np.mean([float(r[key]) for r in rows]))

    model = {k: mean(k) for k in ("si-snr", "si-snr_i", "sdr", "sdr_i")}
    # The improvements are over the mixture, so the mixture's own scores are the differences.
    mixture_si_snr = float(np.mean([float(r["si-snr"]) - float(r["si-snr_i"]) for r in rows]))
    mixture_sdr = float(np.mean([float(r["sdr"]) - float(r["sdr_i"]) for r in rows]))
    lines = [
        f"Mean over {len(rows)} test mixture(s), dB",
        "",
        "| system | SI-SNR | SI-SNRi | SDR | SDRi |",
        "|---|---:|---:|---:|---:|",
        f"| mixture (no separation) | {mixture_si_snr:.2f} | 0.00 | {mixture_sdr:.2f} | 0.00 |",
        f"| NASS Sepformer (demo) | {model['si-snr']:.2f} | {model['si-snr_i']:.2f} | "
        f"{model['sdr']:.2f} | {model['sdr_i']:.2f} |",
    ]
    return "\n".join(lines)


def _train(corpus, train_dir, overrides, n_epochs):
    """Runs the LibriMix recipe (resuming from ``train_dir``'s newest checkpoint)."""
    argv = [str(RECIPE_HPARAMS), "--data_folder", str(corpus), "--output_folder", str(train_dir),
            "--N_epochs", str(n_epochs)]
    for key, value in overrides.items():
        argv += [f"--{key}", str(value)]
    run(argv)


def _read(path):
    signal, sample_rate = sf.read(str(path), dtype="float64")
    if sample_rate != SAMPLE_RATE or signal.ndim != 1:
        raise DemoError(f"{path} must be mono at {SAMPLE_RATE} Hz")
    return signal
