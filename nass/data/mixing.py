"""Mixing the LibriMix way: each source at a random loudness, then all scaled down together if anything clips.

LibriMix draws speech at -33..-25 LUFS and noise at -38..-30 LUFS
(pyloudnorm's integrated loudness, ITU-R BS.1770), and scales a mixture's
files down together until neither the mixture nor any source clips. The
demo corpus, the text-to-speech corpus and dynamic mixing all mix this way.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> speech = [np.sin(np.arange(8000) * f) for f in (0.05, 0.07)]
>>> sources = [to_loudness(s, rng.uniform(*SPEECH_LUFS), 8000) for s in speech]
>>> bool(-33.0 <= loudness(sources[0], 8000) <= -25.0)
True
>>> loud = without_clipping([np.full(10, 0.8), np.full(10, 0.8)])
>>> float(loud[0][0] + loud[1][0])
0.9
>>> to_16_bits([np.array([0.1, -0.3])])[0] * 32768
array([ 3277., -9830.])
"""

import functools

import numpy as np
import pyloudnorm

SPEECH_LUFS = (-33.0, -25.0)
NOISE_LUFS = (-38.0, -30.0)
# The loudest sample a mixture or source may reach (LibriMix's).
PEAK = 0.9
# pyloudnorm's gating block: shorter signals are measured by RMS instead.
MIN_LOUDNESS_SECONDS = 0.4


@functools.lru_cache(maxsize=None)
def _meter(sample_rate):
    return pyloudnorm.Meter(sample_rate)


def loudness(signal, sample_rate):
    """Integrated loudness (LUFS) of a 1-D signal; RMS dBFS if shorter than 0.4 s; -inf if silent."""
    signal = np.asarray(signal, dtype=np.float64)
    if signal.shape[0] >= MIN_LOUDNESS_SECONDS * sample_rate:
        return _meter(sample_rate).integrated_loudness(signal)
    power = np.mean(signal ** 2) if signal.size else 0.0
    return 10 * np.log10(power) if power > 0 else -np.inf


def to_loudness(signal, target, sample_rate):
    """``signal`` scaled to ``target`` loudness (:func:`loudness`); a silent signal stays silent."""
    level = loudness(signal, sample_rate)
    if not np.isfinite(level):
        return signal * 0.0
    return signal * float(10 ** ((target - level) / 20))


def without_clipping(sources, peak=PEAK):
    """``sources`` scaled down together so that neither their sum nor any of them exceeds ``peak``."""
    loudest = max(np.abs(sum(sources)).max(), *(np.abs(s).max() for s in sources))
    if loudest > peak:
        return [s * (peak / loudest) for s in sources]
    return list(sources)


def to_16_bits(sources):
    """``sources`` rounded to 16-bit PCM steps, so that sums of them are exact once written as PCM_16."""
    return [np.round(s * 32768) / 32768 for s in sources]
