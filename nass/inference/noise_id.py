"""Which output of a ``pit`` model is the noise: the one least like one voice.

Each of the C speaker outputs holds one talker; the noise output anything
else (steady or bursty noise, babble). :func:`identify_noise` scores every
output from features of one voice (spectral structure, periodicity, pitch
continuity, level dynamics and their spread) with a small network whose
weights ship as ``nass/assets/noise_id.json`` (fitted by
``tools/fit_noise_id.py``); ``softmax(-scores)`` is how likely each output is
the noise, and a runner-up within :data:`CLOSE_MARGIN` makes the call close.
Accuracy per leakage level: ``benchmarks/README.md``.

Example
-------
A voice gliding in pitch, in syllables, against steady noise:

>>> import torch
>>> t = torch.arange(32000) / 8000
>>> f0 = 140 * (1 + 0.2 * torch.sin(2 * torch.pi * 0.7 * t))
>>> phase = 2 * torch.pi * torch.cumsum(f0, dim=0) / 8000
>>> voice = sum(torch.sin(k * phase) / k for k in range(1, 16)) * (torch.sin(2 * torch.pi * 3 * t) > 0)
>>> noise = torch.randn(32000, generator=torch.Generator().manual_seed(0))
>>> choice = identify_noise(torch.stack([voice, noise], dim=-1), 8000)
>>> choice.index, choice.close
(1, False)
"""

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torchaudio

WEIGHTS_FILE = Path(__file__).resolve().parents[1] / "assets" / "noise_id.json"
# Features are measured at 8 kHz (the models' rate); other rates are resampled.
RATE = 8000
# speech_likeness frames: 64 ms resolve the harmonics of low voices (16 Hz bins).
FRAME_SECONDS = 0.064
# Power floor relative to a signal's mean power (-60 dB): keeps the logs of
# digital silence finite.
POWER_FLOOR = 1e-6
# Pitch frames: 32 ms every 16 ms, pitch 70-400 Hz.
PITCH_FRAME, PITCH_HOP, F0_MIN, F0_MAX = 256, 128, 70.0, 400.0
# A frame is voiced above this periodicity; two voiced frames continue one
# pitch when their lags differ by less than this fraction.
VOICED, CONTINUOUS = 0.6, 0.06
# Frames more than this many dB below the loudest are left out of the level spread.
LEVEL_RANGE_DB = 50.0
# A choice is close when the runner-up's score is within this of the lowest
# (log-odds: the chosen output is less than e^1.5 = 4.5 times likelier).
CLOSE_MARGIN = 1.5
# Standardised features are clipped to +-MAX_Z (see one_voice_scores).
MAX_Z = 4.0
# Frames per block of the pitch analysis: bounds its memory on long signals.
BLOCK_FRAMES = 4096

FEATURES = ("structure", "periodicity", "voiced", "level_spread", "continuity",
            "continuity_of_voiced", "periodicity_spread", "pitch_spread")


@dataclass
class NoiseChoice:
    """Which output :func:`identify_noise` judged the noise, and how sure it is.

    Attributes
    ----------
    index : int
        The output (0-based) judged the noise.
    scores : list of float
        How much each output sounds like one voice (log-odds; lowest: noise).
    margin : float
        Second-lowest score minus the lowest.
    close : bool
        ``margin < CLOSE_MARGIN``: the runner-up could be the noise as well.
    """

    index: int
    scores: list = field(default_factory=list)
    margin: float = math.inf
    close: bool = False

    @property
    def probabilities(self):
        """How likely each output is to be the noise (``softmax(-scores)``)."""
        return torch.softmax(-torch.tensor(self.scores, dtype=torch.float64), 0).tolist()


def speech_likeness(signal, sample_rate):
    """How far the spectrum of each frame is from flat, once the signal's own colour is removed.

    The power spectrogram ``P[f, t]`` (64 ms Hann frames, 32 ms hop) is
    whitened by the signal's average spectrum, ``W = P / mean_t P``, and each
    frame scores ``log(mean_f W) - mean_f log(W)``, the log-ratio of the
    arithmetic to the geometric mean of its bins (0 for a flat frame); the
    result is the mean over frames. Noise of any colour, steady or bursty,
    whitens to bins of exponentially distributed power in every frame, which
    scores Euler's constant (about 0.58); speech, whose harmonics, formants
    and voicing change from frame to frame (and music), scores well above 1.

    Arguments
    ---------
    signal : torch.Tensor
        ``[T]``.
    sample_rate : int

    Returns
    -------
    float

    Example
    -------
    Noise scores about 0.58, bursty or not; a voice gliding in pitch (its
    harmonics move from frame to frame) scores far higher:

    >>> g = torch.Generator().manual_seed(0)
    >>> noise = torch.randn(16000, generator=g)
    >>> bursts = noise * (torch.arange(16000) // 1600 % 2)            # on 0.2 s, off 0.2 s
    >>> t = torch.arange(16000) / 8000
    >>> f0 = 150 + 30 * torch.sin(2 * torch.pi * 1.5 * t)              # intonation, Hz
    >>> phase = 2 * torch.pi * torch.cumsum(f0, dim=0) / 8000
    >>> voice = sum(torch.sin(k * phase) / k for k in range(1, 20))   # 19 harmonics
    >>> [round(speech_likeness(x, 8000), 1) for x in (noise, bursts, voice)]
    [0.6, 0.4, 3.0]
    """
    frame = max(2, round(FRAME_SECONDS * sample_rate))
    # float32 and in-place steps: a long recording's spectrogram is the largest
    # thing held here, about 4 bytes per sample.
    power = torch.stft(
        signal.float(), n_fft=frame, hop_length=frame // 2, window=torch.hann_window(frame),
        center=True, pad_mode="constant", return_complex=True,
    ).abs().pow_(2)
    power += POWER_FLOOR * power.mean() + torch.finfo(power.dtype).tiny
    power /= power.mean(dim=1, keepdim=True)
    per_frame = power.mean(dim=0).log() - power.log_().mean(dim=0)
    return float(per_frame.double().mean())


def pitch_track(signal):
    """Per 32 ms frame (16 ms hop) of an 8 kHz ``signal``: periodicity, energy, pitch lag.

    Periodicity is the largest normalised cross-correlation between the
    frame and the frame shifted by a lag of 20 to 115 samples (400 to 70 Hz):
    1 for a perfectly periodic frame, near 0 for noise.

    >>> t = torch.arange(8000) / 8000
    >>> periodicity, energy, lag = pitch_track(torch.sin(2 * torch.pi * 200 * t))
    >>> round(float(periodicity.min()), 3), int(lag.median())     # 200 Hz: 40 samples
    (1.0, 40)
    """
    signal = signal.float()
    lag_min, lag_max = int(RATE / F0_MAX), math.ceil(RATE / F0_MIN)
    width = PITCH_FRAME + lag_max
    n_frames = (signal.numel() - width) // PITCH_HOP + 1
    if n_frames < 1:
        empty = torch.zeros(0)
        return empty, empty, empty.long()
    n_fft = 1 << math.ceil(math.log2(width + PITCH_FRAME))
    offsets = torch.arange(width)
    floor = POWER_FLOOR * PITCH_FRAME * signal.pow(2).mean() + torch.finfo(torch.float32).tiny
    results = []
    for first in range(0, n_frames, BLOCK_FRAMES):
        starts = torch.arange(first, min(first + BLOCK_FRAMES, n_frames)) * PITCH_HOP
        segment = signal[starts[:, None] + offsets[None]]
        head = segment[:, :PITCH_FRAME]
        spectrum = torch.fft.rfft(segment, n_fft) * torch.fft.rfft(head, n_fft).conj()
        # sum_n head[n] * segment[n + lag], lag = 0 .. lag_max
        correlation = torch.fft.irfft(spectrum, n_fft)[:, : lag_max + 1]
        cumulative = torch.nn.functional.pad(segment.pow(2).cumsum(dim=1), (1, 0))
        # energy of segment[lag:lag + PITCH_FRAME], lag = 0 .. lag_max
        shifted_energy = (cumulative[:, PITCH_FRAME:PITCH_FRAME + lag_max + 1]
                          - cumulative[:, : lag_max + 1])
        energy = shifted_energy[:, :1]
        # The floor keeps near-silent frames (of a signal with digital silence) near 0.
        normalised = correlation / ((energy * shifted_energy).sqrt() + floor)
        periodicity, lag = normalised[:, lag_min:].max(dim=1)
        results.append((periodicity, energy[:, 0], lag + lag_min))
    return tuple(torch.cat(parts) for parts in zip(*results))


def features(signal, sample_rate):
    """``[len(FEATURES)]`` float64: the features of one output (see the module's docstring)."""
    signal = torch.as_tensor(signal).float().cpu()
    if sample_rate != RATE:
        signal = torchaudio.functional.resample(signal, int(sample_rate), RATE)
    signal = signal - signal.mean()
    periodicity, energy, lag = pitch_track(signal)
    if periodicity.numel() < 4 or not energy.max() > 0:
        return torch.zeros(len(FEATURES), dtype=torch.float64)
    level = 10 * torch.log10(energy + 1e-12 * energy.max())
    level = level.clamp(min=float(level.max()) - LEVEL_RANGE_DB)
    loud = level >= level.median()
    active = level > level.max() - LEVEL_RANGE_DB + 10
    voiced = periodicity > VOICED
    log_lag = lag.double().log()
    both = voiced[1:] & voiced[:-1]
    smooth = both & ((log_lag[1:] - log_lag[:-1]).abs() < math.log1p(CONTINUOUS))
    values = [
        speech_likeness(signal, RATE),
        periodicity[loud].mean(),
        (periodicity[loud] > 0.75).float().mean(),
        level.std(),
        smooth.double().mean(),
        smooth.sum() / both.sum().clamp(min=1),
        periodicity[active].std() if active.sum() > 1 else 0.0,
        log_lag[1:][both].std() if both.sum() > 3 else 0.0,
    ]
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


@lru_cache(maxsize=None)
def _weights(path=WEIGHTS_FILE):
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if tuple(data["features"]) != FEATURES:
        raise ValueError(f"{path}: weights for features {data['features']}, expected {FEATURES}")
    return tuple(torch.tensor(data[key], dtype=torch.float64)
                 for key in ("mean", "scale", "hidden_weights", "hidden_bias", "weights"))


def one_voice_scores(feature_rows):
    """``[..., S]`` scores of ``[..., S, len(FEATURES)]`` features (higher: more like one voice).

    Standardised features are clipped to :data:`MAX_Z`: a signal unlike any
    the weights were fitted on (a pure tone, digital silence) must not let one
    feature outweigh all the others.
    """
    mean, scale, hidden_weights, hidden_bias, weights = _weights()
    return score_network(((feature_rows - mean) / scale).clamp(-MAX_Z, MAX_Z),
                         hidden_weights, hidden_bias, weights)


def score_network(standardised, hidden_weights, hidden_bias, weights):
    """``tanh(z @ hidden_weights + hidden_bias) @ weights``: the score of standardised features."""
    return torch.tanh(standardised @ hidden_weights + hidden_bias) @ weights


def identify_noise(outputs, sample_rate):
    """Which output of ``outputs`` ``[T, S]`` is the noise, with the scores; see :class:`NoiseChoice`.

    >>> t = torch.arange(16000) / 8000
    >>> noise = torch.randn(16000, generator=torch.Generator().manual_seed(1))
    >>> def voice(f0):                                   # a gliding pitch, 19 harmonics
    ...     phase = 2 * torch.pi * torch.cumsum(f0 + 0.2 * f0 * torch.sin(3 * t), dim=0) / 8000
    ...     return sum(torch.sin(k * phase) / k for k in range(1, 20)) * (torch.sin(7 * t) > 0)
    >>> identify_noise(torch.stack([voice(110), noise, voice(190)], dim=-1), 8000).index
    1
    """
    rows = torch.stack([features(outputs[:, k], sample_rate) for k in range(outputs.shape[-1])])
    scores = one_voice_scores(rows).tolist()
    order = sorted(range(len(scores)), key=scores.__getitem__)
    margin = scores[order[1]] - scores[order[0]] if len(scores) > 1 else math.inf
    return NoiseChoice(index=order[0], scores=scores, margin=margin, close=margin < CLOSE_MARGIN)


def pick_noise(outputs, sample_rate):
    """Index of the output ``[T, S]`` that is the noise (:func:`identify_noise`'s ``index``)."""
    return identify_noise(outputs, sample_rate).index
