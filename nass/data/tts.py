"""A CPU-sized noisy Libri2Mix whose speech is synthetic (text-to-speech), mixed with real noise.

Generated English sentences spoken by ``flite`` and ``espeak-ng`` voices
(``apt-get install flite espeak-ng``), split-disjoint voices and sentences,
mixed with real noise the LibriMix way (:mod:`nass.data.mixing`) and written
in Libri2Mix's layout. Robotic, clean speech: it compares training variants
at CPU scale, not how they do on real speech::

    python -m nass.data.tts /data/tts-librimix --n_train 400

Example
-------
>>> len(sentences(np.random.default_rng(0), 3)), "{" in " ".join(sentences(np.random.default_rng(0), 50))
(3, False)
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from nass.data.mixing import NOISE_LUFS, SPEECH_LUFS, to_16_bits, to_loudness, without_clipping
from nass.data.synthetic import _write_librimix_metadata

__all__ = ["VOICES", "build_tts_librimix", "sentences", "speak", "missing_tools"]

SAMPLE_RATE = 8000
TOOLS = ("flite", "espeak-ng")
INSTALL_HINT = "apt-get install flite espeak-ng"
ASSET_NOISE = Path(__file__).resolve().parents[1] / "assets" / "noise"

# Speakers: (engine, voice, pitch 0-99 for espeak-ng, words per minute for espeak-ng).
# Each split gets its own voices, as LibriMix's splits have their own speakers.
VOICES = {
    "train-100": [
        ("flite", "kal16", None, None), ("flite", "awb", None, None), ("flite", "rms", None, None),
        ("espeak-ng", "en-us+m1", 35, 150), ("espeak-ng", "en-gb+f2", 65, 160),
        ("espeak-ng", "en-gb-scotland+m3", 45, 140), ("espeak-ng", "en-029+f4", 70, 155),
        ("espeak-ng", "en-gb-x-rp+m5", 40, 165), ("espeak-ng", "en-us+f3", 60, 145),
        ("espeak-ng", "en-gb-x-gbclan+m7", 30, 150),
    ],
    "dev": [
        ("flite", "kal", None, None), ("espeak-ng", "en-us+m4", 50, 155),
        ("espeak-ng", "en-gb+f1", 75, 150),
    ],
    "test": [
        ("flite", "slt", None, None), ("espeak-ng", "en-gb-x-rp+m2", 38, 160),
        ("espeak-ng", "en-us+f5", 68, 145),
    ],
}

_WORDS = {
    "det": "the a this that every one".split(),
    "adj": ("quiet old young bright heavy small yellow green careful sudden warm cold empty "
            "distant gentle busy").split(),
    "noun": ("farmer teacher river window garden letter station doctor basket engine village "
             "kitchen mountain captain story candle market bridge sister morning").split(),
    "verb": ("carried watched opened followed painted answered found moved cleaned counted "
             "pushed visited").split(),
    "num": "two three four five seven nine twelve".split(),
    "plural": "boxes apples letters chairs stones horses papers lamps coins".split(),
    "prep": "to across behind near under beside through".split(),
    "adv": ["slowly", "quickly", "again", "today", "before noon", "at night", "every day"],
}
_TEMPLATES = [
    "{det} {adj} {noun} {verb} {num} {adj} {plural} {prep} the {noun}",
    "{det} {noun} {verb} the {adj} {noun} {adv}",
    "yesterday {det} {adj} {noun} {verb} {num} {plural} {prep} the {adj} {noun}",
    "when the {noun} {verb} the {noun} the {adj} {noun} {verb} {num} {plural}",
    "{det} {noun} {prep} the {noun} {verb} the {adj} {plural} {adv}",
]


def sentences(rng, count):
    """``count`` generated English sentences (lower case, no punctuation)."""
    out = []
    for _ in range(count):
        text = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        for key, words in _WORDS.items():
            while "{" + key + "}" in text:
                text = text.replace("{" + key + "}", words[rng.integers(len(words))], 1)
        out.append(text)
    return out


def missing_tools():
    """The text-to-speech programs not found on ``PATH``."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def speak(voice, text, sample_rate=SAMPLE_RATE):
    """``text`` spoken by ``voice`` (an entry of :data:`VOICES`), mono float at ``sample_rate``.

    Leading and trailing silence is trimmed.
    """
    engine, name, pitch, rate = voice
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "utt.wav"
        if engine == "flite":
            cmd = ["flite", "-voice", name, "-t", text, "-o", str(wav)]
        else:
            cmd = ["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(rate), "-w", str(wav), text]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        signal, sr = sf.read(str(wav), dtype="float64")
    if signal.ndim > 1:
        signal = signal.mean(axis=1)
    if sr != sample_rate:
        g = np.gcd(sr, sample_rate)
        signal = resample_poly(signal, sample_rate // g, sr // g)
    return _trim(signal)


def _trim(signal, floor_db=-40.0):
    level = np.abs(signal)
    loud = np.flatnonzero(level > level.max() * 10 ** (floor_db / 20)) if level.max() > 0 else []
    return signal[loud[0]:loud[-1] + 1] if len(loud) else signal


def build_tts_librimix(root, counts=None, seed=0, noise_folder=None, synthesize=speak,
                       overwrite=False, progress=None):
    """Writes ``root/Libri2Mix`` (see the module docstring); returns that folder.

    Arguments
    ---------
    root : str or Path
    counts : dict
        Mixtures per split, default ``{"train-100": 400, "dev": 50, "test": 50}``.
    seed : int
    noise_folder : str or Path, optional
        Noise recordings (``*.wav``, ``*.flac``, any rate; e.g. WHAM!'s ``tr``);
        default: the real noise shipped in ``nass/assets/noise``.
    synthesize : callable
        ``(voice, text, sample_rate) -> np.ndarray``; :func:`speak` by default
        (needs ``flite`` and ``espeak-ng``).
    overwrite : bool
        Replace an existing ``root/Libri2Mix``.
    progress : callable, optional
        Called with ``(split, done, total)`` after each mixture.

    Example
    -------
    >>> import tempfile
    >>> fake = lambda voice, text, sr: np.random.default_rng(len(text)).standard_normal(sr)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = build_tts_librimix(tmp, {"dev": 1}, synthesize=fake)
    ...     sorted(p.name for p in (folder / "wav8k" / "min" / "dev").iterdir())
    ['mix_both', 'mix_clean', 'mix_single', 'noise', 's1', 's2']
    """
    counts = counts or {"train-100": 400, "dev": 50, "test": 50}
    unknown = sorted(set(counts) - set(VOICES))
    if unknown:
        raise ValueError(f"counts: unknown split(s) {unknown}; expected among {sorted(VOICES)}")
    corpus = Path(root).resolve() / "Libri2Mix"
    if corpus.exists():
        if not overwrite:
            raise FileExistsError(f"{corpus} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(corpus)
    noises = _noises(Path(noise_folder) if noise_folder else ASSET_NOISE)
    base = corpus / "wav8k" / "min"
    for split_index, (split, count) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, split_index])
        voices = VOICES[split]
        texts = sentences(rng, 2 * count)
        mixtures, lengths = [], []
        for index in range(count):
            first, second = rng.choice(len(voices), size=2, replace=False)
            speech = [synthesize(voices[v], texts[2 * index + j], SAMPLE_RATE)
                      for j, v in enumerate((first, second))]
            sources = _mix_sources(rng, speech, noises)
            name = f"{split}-{index:04d}_v{first}-v{second}"
            s1, s2, noise = sources
            files = {"s1": s1, "s2": s2, "noise": noise, "mix_clean": s1 + s2,
                     "mix_both": s1 + s2 + noise, "mix_single": s1 + noise}
            for sub, signal in files.items():
                (base / split / sub).mkdir(parents=True, exist_ok=True)
                sf.write(str(base / split / sub / f"{name}.wav"), signal, SAMPLE_RATE,
                         subtype="PCM_16")
            mixtures.append(SimpleNamespace(name=name))
            lengths.append(len(s1))
            if progress:
                progress(split, index + 1, count)
        _write_librimix_metadata(base, split, mixtures, lengths, num_spks=2)
    return corpus


def _noises(folder):
    paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".wav", ".flac"))
    if not paths:
        raise FileNotFoundError(f"noise_folder {folder} holds no .wav or .flac files")
    noises = []
    for path in paths:
        signal, sr = sf.read(str(path), dtype="float64")
        if signal.ndim > 1:
            signal = signal.mean(axis=1)
        if sr != SAMPLE_RATE:
            g = np.gcd(sr, SAMPLE_RATE)
            signal = resample_poly(signal, SAMPLE_RATE // g, sr // g)
        noises.append(signal)
    return noises


def _mix_sources(rng, speech, noises):
    """Two utterances cut to the shorter, a noise excerpt, at LibriMix loudness, 16-bit."""
    length = min(len(s) for s in speech)
    noise = noises[rng.integers(len(noises))]
    if len(noise) < length:
        noise = np.tile(noise, length // len(noise) + 1)
    start = rng.integers(len(noise) - length + 1)
    signals = [s[:length] for s in speech] + [noise[start:start + length]]
    levels = [rng.uniform(*SPEECH_LUFS), rng.uniform(*SPEECH_LUFS), rng.uniform(*NOISE_LUFS)]
    scaled = without_clipping([to_loudness(signal, target, SAMPLE_RATE)
                               for signal, target in zip(signals, levels)])
    return to_16_bits(scaled)


def main(argv=None):
    """``python -m nass.data.tts ROOT [--n_train N --n_dev N --n_test N --seed S ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m nass.data.tts",
        description="Builds a noisy Libri2Mix-layout corpus from SYNTHETIC speech (flite, "
                    "espeak-ng) and real noise, for CPU-sized experiments.")
    parser.add_argument("root", help="the corpus goes to ROOT/Libri2Mix")
    parser.add_argument("--n_train", type=int, default=400)
    parser.add_argument("--n_dev", type=int, default=50)
    parser.add_argument("--n_test", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise_folder", default=None,
                        help="noise recordings to draw from (default: nass/assets/noise)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"nass.data.tts: {', '.join(missing)} not found; install with: {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    for name in ("n_train", "n_dev", "n_test"):
        if getattr(args, name) < 1:
            print(f"nass.data.tts: --{name} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    counts = {"train-100": args.n_train, "dev": args.n_dev, "test": args.n_test}

    def progress(split, done, total):
        if done == total or done % 50 == 0:
            print(f"{split}: {done}/{total} mixtures", flush=True)

    try:
        corpus = build_tts_librimix(args.root, counts, args.seed, args.noise_folder,
                                    overwrite=args.overwrite, progress=progress)
    except (FileExistsError, FileNotFoundError) as err:
        print(f"nass.data.tts: {err}", file=sys.stderr)
        return 2
    print(f"wrote {corpus} (synthetic speech, real noise); train with --data_folder {corpus}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
