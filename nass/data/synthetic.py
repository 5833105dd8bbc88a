"""Tiny synthetic corpora in the on-disk layouts of the real ones, for tests and trials.

A clone has no data, so tests and smoke runs use these, written where and how
the real corpora keep their files (LibriMix, WHAM!/WHAMR!, custom, LibriSpeech-
like speakers, noise folders), so the code that reads them is the code that
reads the real ones. Voices are speech-like (harmonic syllables on a per-speaker
pitch, moving formants, pauses), noise is coloured with bursts, and every file
is a deterministic function of ``seed``. About 750 lines: one generator per
layout and the voice synthesis they share; split only if a layout grows.

Example
-------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     folder = make_librimix(tmp, splits=("dev",), n_mixtures=1, duration=0.5)
...     folder.name, sorted(p.name for p in (folder / "wav8k" / "min" / "dev").iterdir())
('Libri2Mix', ['mix_both', 'mix_clean', 'mix_single', 'noise', 's1', 's2'])
"""

import csv
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, lfilter

__all__ = [
    "make_librimix", "make_wham", "make_custom", "make_librispeech_like", "make_noise_folder",
]

LIBRIMIX_SPLITS = ("train-100", "train-360", "dev", "test")
WHAM_SPLITS = ("tr", "cv", "tt")
CUSTOM_SPLITS = ("train", "valid", "test")
MODES = ("min", "max")

SPEECH_DBFS = -25.0
# Every file of a mixture is scaled together so that none peaks above this:
# headroom for the 16-bit rounding of sums and for users who add gain.
_PEAK = 0.9
_FULL_SCALE = 32768
# Speakers of one mixture differ in mean f0 by at least this ratio (about
# two and a half semitones), so that they are separable by pitch.
_MIN_F0_RATIO = 1.15
# (F1, F2, F3) in Hz of /a/, /i/, /u/, /e/, /o/ for an adult male vocal tract.
_VOWELS = np.array([
    [730.0, 1090.0, 2440.0],
    [270.0, 2290.0, 3010.0],
    [300.0, 870.0, 2240.0],
    [530.0, 1840.0, 2480.0],
    [570.0, 840.0, 2410.0],
])
_FORMANT_GAINS = np.array([1.0, 0.6, 0.3])
_FORMANT_BANDWIDTHS = np.array([90.0, 120.0, 170.0])
_ALNUM = list("0123456789abcdefghijklmnopqrstuvwxyz")
_MAX_HARMONICS = 64
_SPEECH_TOP_HZ = 5000.0


# --------------------------------------------------------------------------- public


def make_librimix(root, num_spks=2, sample_rates=(8000,), modes=("min",),
                  splits=("train-100", "dev", "test"), n_mixtures=3, duration=1.5, seed=0,
                  snr_db=(3.0, 8.0)):
    """Writes a tiny Libri2Mix/Libri3Mix with its metadata csvs.

    Files go to ``root/Libri{C}Mix/wav{sr//1000}k/{mode}/{split}/{folder}/<id>.wav``
    with folders ``mix_both, mix_clean, mix_single, s1.. sC, noise``, and
    ``.../{mode}/metadata/mixture_{split}_{mix_both,mix_clean,mix_single}.csv``
    as LibriMix writes them (absolute paths, ``length`` in samples). Ids look
    like ``103-1240-0003_1235-135887-0017``. In ``min`` mode sources are cut
    to the shortest, in ``max`` mode zero-padded at the end to the longest.

    Arguments
    ---------
    root : str or Path
    num_spks : int
        2 or 3.
    sample_rates : sequence of int
        Each gives a ``wav{sr//1000}k`` folder holding the same mixtures.
    modes : sequence of str
        ``"min"`` and/or ``"max"``.
    splits : sequence of str
        Among ``train-100, train-360, dev, test``.
    n_mixtures : int
        Mixtures per split.
    duration : float
        Approximate source length in seconds; each source varies by +-20 %.
    seed : int
    snr_db : (float, float)
        Range of the noise level below the speech, drawn per mixture.

    Returns
    -------
    Path
        The ``Libri{C}Mix`` folder (the ``data_folder`` of the LibriMix recipes).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = make_librimix(tmp, num_spks=3, splits=("test",), n_mixtures=1, duration=0.5)
    ...     sorted(p.name for p in (folder / "wav8k" / "min" / "metadata").iterdir())
    ['mixture_test_mix_both.csv', 'mixture_test_mix_clean.csv', 'mixture_test_mix_single.csv']
    """
    if num_spks not in (2, 3):
        raise ValueError(f"num_spks must be 2 or 3 (LibriMix has no other), got {num_spks!r}")
    splits = _choices("splits", splits, LIBRIMIX_SPLITS)
    modes = _choices("modes", modes, MODES)
    sample_rates = _sample_rates(sample_rates)
    _check_sizes(n_mixtures=n_mixtures, duration=duration)
    corpus = Path(root).resolve() / f"Libri{num_spks}Mix"
    for split in splits:
        mixtures = _plan(_rng(seed, "librimix", split), n_mixtures, num_spks, duration, snr_db,
                         style="librispeech")
        for sr in sample_rates:
            for mode in modes:
                base = corpus / f"wav{sr // 1000}k" / mode
                lengths = _write_mixtures(base / split, mixtures, sr, mode)
                _write_librimix_metadata(base, split, mixtures, lengths, num_spks)
    return corpus


def make_wham(root, sample_rates=(8000,), modes=("min",), splits=("tr", "cv", "tt"),
              n_mixtures=3, duration=1.5, seed=0, reverb=False, snr_db=(3.0, 8.0)):
    """Writes a tiny WHAM! (or, with ``reverb``, WHAMR!).

    WHAM!: ``root/wav{sr//1000}k/{mode}/{split}/{mix_both,mix_clean,mix_single,s1,s2,noise}``.
    WHAMR!: the same with ``{mix_both,mix_clean,mix_single,s1,s2}_{anechoic,reverb}`` and
    ``noise``; reverberant sources are the anechoic ones convolved with a
    synthetic room impulse response (RT60 0.15-0.3 s), cut to the same length.
    Ids look like wsj0-2mix's ``011a010d_1.9287_20ec0112_-1.9287`` (utterance,
    level in dB, utterance, level); WHAM! and WHAMR! from one seed hold the
    same mixtures.

    Arguments
    ---------
    root : str or Path
    sample_rates, modes, n_mixtures, duration, seed, snr_db
        As in :func:`make_librimix`.
    splits : sequence of str
        Among ``tr, cv, tt``.
    reverb : bool
        Write WHAMR!'s layout.

    Returns
    -------
    Path
        ``root`` (the folder holding ``wav8k``).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = make_wham(tmp, splits=("tt",), n_mixtures=1, duration=0.5, reverb=True)
    ...     sorted(p.name for p in (folder / "wav8k" / "min" / "tt").iterdir())[:4]
    ['mix_both_anechoic', 'mix_both_reverb', 'mix_clean_anechoic', 'mix_clean_reverb']
    """
    splits = _choices("splits", splits, WHAM_SPLITS)
    modes = _choices("modes", modes, MODES)
    sample_rates = _sample_rates(sample_rates)
    _check_sizes(n_mixtures=n_mixtures, duration=duration)
    root = Path(root).resolve()
    for split in splits:
        mixtures = _plan(_rng(seed, "wham", split), n_mixtures, 2, duration, snr_db, style="wsj")
        for sr in sample_rates:
            for mode in modes:
                _write_mixtures(root / f"wav{sr // 1000}k" / mode / split, mixtures, sr, mode,
                                reverb=reverb)
    return root


def make_custom(root, num_spks=2, sample_rate=8000, splits=("train", "valid", "test"),
                n_mixtures=3, duration=1.5, seed=0, snr_db=(3.0, 8.0)):
    """Writes the reference project's custom layout: ``root/{split}/{mixture,source1..,noise}``.

    ``mixture`` is ``sum(source_k) + noise``; sources are cut to the shortest
    (LibriMix's ``min`` mode).

    Arguments
    ---------
    root : str or Path
    num_spks : int
        Speakers per mixture, 1 or more.
    sample_rate : int
    splits : sequence of str
        Among ``train, valid, test``.
    n_mixtures, duration, seed, snr_db
        As in :func:`make_librimix`.

    Returns
    -------
    Path
        ``root``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = make_custom(tmp, splits=("valid",), n_mixtures=1, duration=0.5)
    ...     sorted(p.name for p in (folder / "valid").iterdir())
    ['mixture', 'noise', 'source1', 'source2']
    """
    if not isinstance(num_spks, int) or num_spks < 1:
        raise ValueError(f"num_spks must be a positive int, got {num_spks!r}")
    splits = _choices("splits", splits, CUSTOM_SPLITS)
    (sample_rate,) = _sample_rates([sample_rate], name="sample_rate")
    _check_sizes(n_mixtures=n_mixtures, duration=duration)
    root = Path(root).resolve()
    folders = {"mixture": "mix_both", "noise": "noise"}
    folders.update({f"source{k}": f"s{k}" for k in range(1, num_spks + 1)})
    for split in splits:
        mixtures = _plan(_rng(seed, "custom", split), n_mixtures, num_spks, duration, snr_db,
                         style="librispeech")
        _write_mixtures(root / split, mixtures, sample_rate, "min", folders=folders)
    return root


def make_librispeech_like(root, n_speakers=4, utts_per_speaker=2, sample_rate=16000,
                          duration=2.0, seed=0, ext="flac"):
    """Writes single-speaker utterances in LibriSpeech's layout, for dynamic mixing.

    ``root/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac`` plus each chapter's
    ``<spk>-<chapter>.trans.txt``; one chapter per speaker, speakers at least
    15 % apart in pitch while the 90-250 Hz range allows it.

    Arguments
    ---------
    root : str or Path
    n_speakers, utts_per_speaker : int
    sample_rate : int
    duration : float
        Approximate utterance length in seconds (+-20 %).
    seed : int
    ext : str
        ``"flac"`` or ``"wav"``.

    Returns
    -------
    Path
        ``root``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = make_librispeech_like(tmp, n_speakers=2, utts_per_speaker=1, duration=0.5)
    ...     len(list(folder.glob("*/*/*.flac")))
    2
    """
    if ext not in ("flac", "wav"):
        raise ValueError(f"ext must be 'flac' or 'wav', got {ext!r}")
    (sample_rate,) = _sample_rates([sample_rate], name="sample_rate")
    _check_sizes(n_speakers=n_speakers, utts_per_speaker=utts_per_speaker, duration=duration)
    root = Path(root).resolve()
    rng = _rng(seed, "librispeech")
    for label, voice_seed in _pick_speakers(rng, n_speakers, "librispeech"):
        chapter = int(rng.integers(100, 200000))
        folder = root / label / str(chapter)
        ids = [f"{label}-{chapter}-{utt:04d}" for utt in range(utts_per_speaker)]
        for utt_id in ids:
            n = _n_samples(duration * rng.uniform(0.8, 1.2), sample_rate)
            x = _speech(np.random.default_rng(rng.integers(2**32)), sample_rate, n, voice_seed)
            _write(folder / f"{utt_id}.{ext}", _at_level(x, rng.uniform(-3.0, 3.0)), sample_rate)
        # The transcripts only complete the layout: there are no words to write.
        (folder / f"{label}-{chapter}.trans.txt").write_text(
            "".join(f"{utt_id} SYNTHETIC SPEECH\n" for utt_id in ids)
        )
    return root


def make_noise_folder(root, n_files=4, sample_rate=16000, duration=3.0, seed=0):
    """Writes ``n_files`` noise recordings ``root/noise_<k>.wav``, like WHAM!'s noise.

    Each is a different coloured, non-stationary noise of about ``duration``
    seconds (+-20 %), 5 dB below the speech level of the other corpora.

    Arguments
    ---------
    root : str or Path
    n_files : int
    sample_rate : int
    duration : float
        Approximate length in seconds.
    seed : int

    Returns
    -------
    Path
        ``root``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = make_noise_folder(tmp, n_files=2, duration=0.5)
    ...     sorted(p.name for p in folder.iterdir())
    ['noise_000.wav', 'noise_001.wav']
    """
    (sample_rate,) = _sample_rates([sample_rate], name="sample_rate")
    _check_sizes(n_files=n_files, duration=duration)
    root = Path(root).resolve()
    rng = _rng(seed, "noise")
    for k in range(n_files):
        x = _noise(rng, sample_rate, _n_samples(duration * rng.uniform(0.8, 1.2), sample_rate))
        _write(root / f"noise_{k:03d}.wav", _at_level(x, -5.0), sample_rate)
    return root


# --------------------------------------------------------------------------- signals


@dataclass(frozen=True)
class _Voice:
    f0: float             # mean fundamental, Hz
    vibrato_hz: float
    vibrato_depth: float  # relative f0 swing
    syllable_hz: float
    tract: float          # formant scale: shorter vocal tracts have higher formants
    tilt: float           # harmonic k has amplitude k ** -tilt before the formants


@lru_cache(maxsize=None)
def _voice(speaker_seed):
    """The voice of one speaker: a function of its seed only.

    >>> _voice(103) == _voice(103), 90 <= _voice(103).f0 <= 250
    (True, True)
    """
    rng = np.random.default_rng([0x5EEC, speaker_seed])
    # Log-uniform, as pitch is perceived on a log scale.
    f0 = float(np.exp(rng.uniform(np.log(90.0), np.log(250.0))))
    return _Voice(
        f0=f0,
        vibrato_hz=rng.uniform(4.0, 6.0),
        vibrato_depth=rng.uniform(0.005, 0.02),
        syllable_hz=rng.uniform(3.0, 6.0),
        # Higher voices tend to come with shorter vocal tracts.
        tract=(f0 / 150.0) ** 0.25 * rng.uniform(0.92, 1.08),
        tilt=rng.uniform(0.6, 1.2),
    )


def _speech(rng, sr, n_samples, speaker_seed):
    """One unit-RMS utterance of ``n_samples`` in the voice of ``speaker_seed``.

    The syllables, pauses and intonation come from ``rng``. They are laid out
    in seconds, so one rng state gives the same utterance at every sample rate.

    >>> x = _speech(np.random.default_rng(0), 8000, 4000, speaker_seed=103)
    >>> x.shape, round(float(np.sqrt(np.mean(x ** 2))), 6)
    ((4000,), 1.0)
    """
    voice = _voice(speaker_seed)
    seconds = n_samples / sr
    # How many draws the layout and the intonation take depends on the length,
    # which rounding makes differ by a hair across sample rates: separate
    # streams keep one from shifting the other.
    layout_rng, pitch_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))
    envelope = np.zeros(n_samples)
    formants = np.zeros((n_samples, 3))

    def syllable(start, length, shape, gain, vowels):
        i0, i1 = round(start * sr), min(round((start + length) * sr), n_samples)
        m = i1 - i0
        if m <= 0:
            return
        # A rounded burst of energy per syllable: the 3-6 Hz modulation of speech.
        envelope[i0:i1] = gain * np.sin(np.pi * (np.arange(m) + 0.5) / m) ** shape
        # The vowel glides from one to another within the syllable.
        glide = np.linspace(0.0, 1.0, m)[:, None]
        a, b = _VOWELS[vowels[0]], _VOWELS[vowels[1]]
        formants[i0:i1] = ((1 - glide) * a + glide * b) * voice.tract

    start, placed = layout_rng.uniform(0.0, 0.15), False
    while True:
        if placed and layout_rng.random() < 0.25:
            start += layout_rng.uniform(0.1, 0.4)  # a pause between words
        length = layout_rng.uniform(0.7, 1.3) / voice.syllable_hz
        args = (  # shape, gain, vowels
            layout_rng.uniform(0.5, 1.0), layout_rng.uniform(0.4, 1.0),
            layout_rng.integers(len(_VOWELS), size=2),
        )
        if start + length > seconds:
            break
        syllable(start, length, *args)
        start, placed = start + length, True
    if not placed:  # shorter than one syllable: voice all of it
        syllable(0.0, seconds, *args)

    # Pitch: the voice's f0, slow intonation (log-f0 knots every 0.25 s,
    # interpolated), a slight declination and vibrato.
    harmonic_phases = pitch_rng.uniform(0, 2 * np.pi, _MAX_HARMONICS)
    t = np.arange(n_samples) / sr
    vibrato = voice.vibrato_depth * np.sin(2 * np.pi * (voice.vibrato_hz * t + pitch_rng.random()))
    knots = pitch_rng.normal(0.0, 0.025, int(seconds / 0.25) + 2)
    intonation = np.interp(t, 0.25 * np.arange(knots.size), knots)
    f0 = voice.f0 * np.exp(intonation + vibrato - 0.04 * t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / sr

    top = min(_SPEECH_TOP_HZ, 0.45 * sr)  # keep harmonics well below Nyquist: no aliasing
    k = np.arange(1, min(_MAX_HARMONICS, int(top / f0.min())) + 1)
    freqs = f0[:, None] * k
    resonance = sum(
        g / (1.0 + ((freqs - formants[:, i : i + 1]) / bw) ** 2)
        for i, (g, bw) in enumerate(zip(_FORMANT_GAINS, _FORMANT_BANDWIDTHS))
    )
    # A floor under the formants keeps every harmonic audible, as in a real voice.
    amp = k ** -voice.tilt * (0.05 + resonance) * (freqs < top)
    x = envelope * np.sum(amp * np.sin(phase[:, None] * k + harmonic_phases[: k.size]), axis=1)
    return _unit(x)


def _noise(rng, sr, n_samples):
    """Unit-RMS coloured, non-stationary noise; each call on ``rng`` gives another.

    >>> x = _noise(np.random.default_rng(0), 8000, 4000)
    >>> x.shape, round(float(np.sqrt(np.mean(x ** 2))), 6)
    ((4000,), 1.0)
    """
    t = np.arange(n_samples) / sr
    # Brown-ish rumble: leaky integration of white noise; the pole sets how dark.
    pole = rng.uniform(0.95, 0.995)
    rumble = lfilter([1.0], [1.0, -pole], rng.standard_normal(n_samples))
    # A band of hiss (fans, traffic, distant chatter) somewhere in the spectrum.
    centre = rng.uniform(0.05, 0.25) * sr
    b, a = butter(2, [centre / 1.5, centre * 1.5], btype="band", fs=sr)
    hiss = lfilter(b, a, rng.standard_normal(n_samples))
    x = rng.uniform(0.5, 1.0) * _unit(rumble) + rng.uniform(0.3, 1.0) * _unit(hiss)
    # A slow swell, so that it is not stationary even between bursts.
    x *= 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi))
    # Knocks and clatter: decaying bursts, about one a second.
    for _ in range(1 + rng.poisson(n_samples / sr)):
        m = min(n_samples, max(1, round(rng.uniform(0.03, 0.3) * sr)))
        start = rng.integers(0, n_samples - m + 1)
        decay = np.exp(-np.arange(m) / (0.3 * m))
        x[start : start + m] += rng.uniform(1.5, 4.0) * decay * rng.standard_normal(m)
    return _unit(x)


def _rir(rng, sr):
    """A room impulse response: direct path, then exponentially decaying noise.

    >>> h = _rir(np.random.default_rng(0), 8000)
    >>> float(h[0]), 0.15 * 8000 <= h.size <= 0.3 * 8000
    (1.0, True)
    """
    rt60 = rng.uniform(0.15, 0.3)
    n = max(2, round(rt60 * sr))
    # The energy falls by 60 dB (the amplitude by 1e-3) in rt60 seconds.
    tail = rng.standard_normal(n) * np.exp(-np.log(1e3) * np.arange(n) / (rt60 * sr))
    # Direct-to-reverberant ratio of 0-6 dB: a small, fairly close room.
    tail *= np.sqrt(10 ** (-rng.uniform(0.0, 6.0) / 10) / np.sum(tail[1:] ** 2))
    tail[0] = 1.0
    return tail


def _unit(x):
    return x / np.sqrt(np.mean(x**2))


def _amplitude(db):
    """Linear RMS of a unit-RMS signal put ``db`` above the speech level."""
    return 10 ** ((SPEECH_DBFS + db) / 20)


def _at_level(x, db):
    """Unit-RMS ``x`` at ``db`` above the speech level, turned down if it would peak over 0.9."""
    x = x * _amplitude(db)
    return x * min(1.0, _PEAK / np.max(np.abs(x)))


def _write(path, x, sr):
    """Writes floats in (-1, 1) as mono 16-bit PCM; the format follows the suffix.

    The rounding to 16 bits happens here, so values already on the 16-bit
    grid are written exactly.
    """
    pcm = np.round(np.asarray(x) * _FULL_SCALE)
    if pcm.size and np.max(np.abs(pcm)) >= _FULL_SCALE:
        raise ValueError(f"{path}: samples reach full scale, the file would clip")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm.astype(np.int16), sr, subtype="PCM_16")


# --------------------------------------------------------------------------- mixtures


@dataclass(frozen=True)
class _Utterance:
    voice_seed: int
    seconds: float   # natural length
    gain_db: float   # relative to SPEECH_DBFS
    seed: int        # syllables and intonation


@dataclass(frozen=True)
class _Mixture:
    name: str
    utterances: tuple
    noise_db: float  # relative to SPEECH_DBFS
    seed: int        # noise and rooms


def _plan(rng, n_mixtures, num_spks, duration, snr_db, style):
    """What each mixture holds, independent of sample rate and mode."""
    mixtures, names = [], set()
    while len(mixtures) < n_mixtures:
        speakers = _pick_speakers(rng, num_spks, style)
        if style == "wsj":
            # wsj0-2mix puts the speakers +-g dB around each other and names the levels.
            gains = rng.uniform(-2.5, 2.5, num_spks)
            gains -= gains.mean()
            ids = [_utterance_id(rng, style, label) for label, _ in speakers]
            name = "_".join(f"{u}_{g:.4f}" for u, g in zip(ids, gains))
        else:
            gains = rng.uniform(-3.0, 3.0, num_spks)
            name = "_".join(_utterance_id(rng, style, label) for label, _ in speakers)
        utterances = tuple(
            _Utterance(voice_seed, duration * rng.uniform(0.8, 1.2), float(g),
                       int(rng.integers(2**32)))
            for (_, voice_seed), g in zip(speakers, gains)
        )
        noise_db = float(gains.mean() - rng.uniform(*snr_db))
        if name not in names:
            names.add(name)
            mixtures.append(_Mixture(name, utterances, noise_db, int(rng.integers(2**32))))
    return mixtures


def _pick_speakers(rng, n, style):
    """``n`` distinct speakers ``(label, voice seed)``, pitches >= 15 % apart where possible."""
    chosen = []
    misses = 0
    while len(chosen) < n:
        label, voice_seed = _speaker(rng, style)
        f0 = _voice(voice_seed).f0
        apart = all(
            max(f0, g) / min(f0, g) >= _MIN_F0_RATIO for g in (_voice(s).f0 for _, s in chosen)
        )
        # Only about eight voices fit 15 % apart in 90-250 Hz; past that, distinct will do.
        if label not in {c[0] for c in chosen} and (apart or misses >= 100):
            chosen.append((label, voice_seed))
            misses = 0
        else:
            misses += 1
    return chosen


def _speaker(rng, style):
    """A speaker label in the corpus's style and the seed of its voice."""
    if style == "wsj":
        # WSJ0 speakers are three characters: 011, 20e, 40a, ...
        label = f"{rng.choice(list('0124'))}{rng.integers(10)}{rng.choice(_ALNUM)}"
        return label, int(label, 36)
    spk = int(rng.integers(19, 9000))
    return str(spk), spk


def _utterance_id(rng, style, label):
    if style == "wsj":
        # 011a010d: speaker, session letter, then digits and a letter.
        return f"{label}{rng.choice(list('acop'))}{rng.integers(100):02d}{rng.integers(10)}" \
            f"{rng.choice(_ALNUM)}"
    return f"{label}-{rng.integers(100, 200000)}-{rng.integers(150):04d}"


def _render(mixture, sr, mode, reverb=False):
    """Every file of one mixture at ``sr``, ``{folder: signal}``, see :func:`_mixture_files`."""
    lengths = [_n_samples(u.seconds, sr) for u in mixture.utterances]
    n = min(lengths) if mode == "min" else max(lengths)
    rng = np.random.default_rng(mixture.seed)
    # Noise as long as the longest source and cut, so min and max share it.
    noise = _noise(rng, sr, max(lengths))[:n] * _amplitude(mixture.noise_db)
    dry = [
        _speech(np.random.default_rng(u.seed), sr, m, u.voice_seed) * _amplitude(u.gain_db)
        for u, m in zip(mixture.utterances, lengths)
    ]
    variants = {"": dry}
    if reverb:
        # Each speaker stands elsewhere in the room: its own impulse response.
        wet = [fftconvolve(x, _rir(rng, sr))[: x.size] for x in dry]
        variants = {"_anechoic": dry, "_reverb": wet}
    return _mixture_files({k: [_fit(x, n) for x in xs] for k, xs in variants.items()}, noise)


def _mixture_files(variants, noise):
    """Sources, noise and mixtures, scaled together below 0.9 and on the 16-bit grid.

    ``variants`` maps a folder suffix (``""``, ``"_anechoic"``, ``"_reverb"``)
    to the sources. The mixtures are summed from the rounded sources, so
    ``mix_both == sum(s_k) + noise`` holds exactly in the written files.
    """
    def files(variants, noise):
        out = {"noise": noise}
        for suffix, sources in variants.items():
            clean = np.sum(sources, axis=0)
            out.update({f"s{k}{suffix}": s for k, s in enumerate(sources, start=1)})
            out[f"mix_clean{suffix}"] = clean
            out[f"mix_both{suffix}"] = clean + noise
            out[f"mix_single{suffix}"] = sources[0] + noise
        return out

    peak = max(np.max(np.abs(x)) for x in files(variants, noise).values())
    gain = min(1.0, _PEAK / peak)

    def pcm(x):
        return np.round(x * gain * _FULL_SCALE) / _FULL_SCALE

    return files({k: [pcm(x) for x in xs] for k, xs in variants.items()}, pcm(noise))


def _fit(x, n):
    """Cut to ``n`` samples, or zero-pad at the end as LibriMix's max mode does."""
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def _write_mixtures(split_dir, mixtures, sr, mode, reverb=False, folders=None):
    """Writes ``split_dir/<folder>/<mixture name>.wav``; returns the lengths in samples.

    ``folders`` maps the folders to write to the files of :func:`_mixture_files`
    (default: all of them under their own names).
    """
    lengths = []
    for mixture in mixtures:
        files = _render(mixture, sr, mode, reverb)
        for folder, kind in (folders or {k: k for k in files}).items():
            _write(split_dir / folder / f"{mixture.name}.wav", files[kind], sr)
        lengths.append(files["noise"].size)
    return lengths


def _write_librimix_metadata(base, split, mixtures, lengths, num_spks):
    """``base/metadata/mixture_{split}_{subset}.csv`` with LibriMix's columns."""
    speakers = [f"s{k}" for k in range(1, num_spks + 1)]
    columns = {
        "mix_both": (speakers, True),
        "mix_clean": (speakers, False),
        "mix_single": (speakers[:1], True),
    }
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    for subset, (sources, noise) in columns.items():
        header = ["mixture_ID", "mixture_path"]
        header += [f"source_{k}_path" for k in range(1, len(sources) + 1)]
        header += ["noise_path"] * noise + ["length"]
        with open(base / "metadata" / f"mixture_{split}_{subset}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for mixture, length in zip(mixtures, lengths):
                folders = [subset] + sources + ["noise"] * noise
                paths = [str(base / split / d / f"{mixture.name}.wav") for d in folders]
                writer.writerow([mixture.name] + paths + [length])


# --------------------------------------------------------------------------- checks


def _rng(seed, *names):
    """A Generator for one part of one corpus: adding a split leaves the others alone."""
    return np.random.default_rng([seed] + [zlib.crc32(n.encode()) for n in names])


def _n_samples(seconds, sr):
    return max(1, round(seconds * sr))


def _choices(name, values, allowed):
    """``values`` (one string or a sequence) checked against ``allowed``, duplicates dropped."""
    values = (values,) if isinstance(values, str) else tuple(values)
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ValueError(f"{name} must be among {list(allowed)}, got {list(values)} (bad: {bad})")
    return tuple(dict.fromkeys(values))


def _sample_rates(values, name="sample_rates"):
    values = tuple(values)
    # Below 1 kHz the folder name would read wav0k and the voices would not fit.
    if not values or not all(isinstance(v, (int, np.integer)) and v >= 1000 for v in values):
        raise ValueError(f"{name} must be ints of at least 1000 Hz, got {list(values)}")
    return tuple(dict.fromkeys(int(v) for v in values))


def _check_sizes(**sizes):
    for name, value in sizes.items():
        if name == "duration":
            if not value > 0:
                raise ValueError(f"duration must be positive, got {value!r}")
        elif not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def imperfect_estimates(seed, n_src, seconds, sample_rate=8000):
    """Speech-like references and imperfect, shuffled estimates of them, for metric checks.

    Every estimate is its reference plus leakage of the next one, coloured
    noise and a short FIR distortion (what BSS-Eval's SDR is built to
    judge); the estimates are then shuffled by ``perm``.

    Returns
    -------
    estimates, references : numpy.ndarray
        ``[n_src, T]`` each (float64).
    perm : numpy.ndarray
        ``estimates[i]`` estimates ``references[perm[i]]``.

    Example
    -------
    >>> est, ref, perm = imperfect_estimates(0, 2, 0.1)
    >>> est.shape, ref.shape, sorted(perm.tolist())
    ((2, 800), (2, 800), [0, 1])
    """
    rng = np.random.default_rng(seed)
    n_samples = int(seconds * sample_rate)
    refs = np.stack([rng.uniform(0.5, 2.0) * _glide_speech(rng, n_samples, sample_rate)
                     for _ in range(n_src)])
    ests = []
    for j in range(n_src):
        leak = rng.uniform(0.05, 0.3) * refs[(j + 1) % n_src]
        noise = 0.05 * lfilter([1.0, 0.5], [1.0, -0.7], rng.standard_normal(n_samples))
        fir = np.concatenate([[1.0], rng.uniform(-0.3, 0.3, size=4)])
        ests.append(lfilter(fir, [1.0], refs[j] + leak + noise))
    perm = rng.permutation(n_src)
    return np.stack(ests)[perm], refs, perm


def _glide_speech(rng, n_samples, sample_rate):
    """Gliding harmonics under a syllabic envelope, plus low-passed breath noise."""
    t = np.arange(n_samples) / sample_rate
    f0 = rng.uniform(90, 220) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 13))
    syllables = np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6))
    envelope = np.sqrt(np.clip(syllables, 0, None))
    breath = lfilter([1.0], [1.0, -0.95], rng.standard_normal(n_samples))
    return envelope * voiced + 0.02 * breath
