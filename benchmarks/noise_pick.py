"""Which output is the noise: accuracy of ``nass.inference.noise_id`` on real speech and real noise.

    python benchmarks/noise_pick.py --samples DIR            # the held-out evaluation set
    python benchmarks/noise_pick.py --samples DIR --split dev

Refitting the shipped weights is ``tools/fit_noise_id.py``, on the ``dev`` split.

``DIR`` is SpeechBrain's ``tests/samples`` folder (from a clone of
speechbrain/speechbrain, or ``git --git-dir=<mirror> archive HEAD tests/samples
| tar -x``). The shared real-speech mini Libri2Mix is read from ``--librimix``
(default: ``shared/data/mini-librimix-real`` beside the checkout).

For every condition (noise kind x SNR x leakage x close-talk or far-field
speakers) it builds ``--mixtures`` mixtures of two real talkers and a real
noise, 4 s at 8 kHz, then the "outputs" a separator would give: each source
with the other sources leaking into it (``--leakage``: the other sources
together that many dB below the output's own source; ``none``: the true
sources), and asks :func:`nass.inference.noise_id.identify_noise` which output is the
noise, in every order of the outputs (6 per mixture).

* Noise kinds: ``steady`` (real recorded noise), ``bursty`` (ESC-50
  thunderstorms, and real noise gated into random bursts of 0.1 to 0.6 s),
  ``babble3`` and ``babble5`` (3 or 5 summed talkers who are not in the
  mixture, each utterance at its own level and offset).
* SNR: the noise's power over the mean power of the two talkers.
* Far-field: the talkers (and the babble talkers) are convolved with real
  room impulse responses (SpeechBrain's ``RIRs``), one per talker.

Talkers, noises and RIRs are split into a ``dev`` set (looked at while
choosing the features and constants of :mod:`nass.inference.noise_id`, and the only
data ``tools/fit_noise_id.py`` fits the weights on, with a seed of its own) and an ``eval``
set (the figures reported), see :data:`SPLITS`. The last line is
``acc_none=<%> acc_m20=<%> acc_m10=<%> acc_m5=<%> acc_all=<%> n=<picks> close_pct=<%>``
(accuracy per leakage, over all; picks made; picks flagged as close calls).
"""

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from scipy.signal import fftconvolve

from _common import REPO_ROOT, format_table, last_line, machine_summary, use_checkout

use_checkout()

from nass.inference.noise_id import (  # noqa: E402
    CLOSE_MARGIN, NoiseChoice, identify_noise, speech_likeness)

RATE = 8000
SECONDS = 4.0
LIBRIMIX = REPO_ROOT.parent / "shared" / "data" / "mini-librimix-real"

# Talkers: name -> files (relative to --samples, or "librimix:" + path relative to
# Libri2Mix/wav8k/min). The two LibriSpeech talkers of the shared corpus are its dev
# speech (its train/test "speech" is tones, not used).
TALKERS = {
    "asr1": [f"ASR/spk1_snt{k}.wav" for k in range(1, 7)],
    "asr2": [f"ASR/spk2_snt{k}.wav" for k in range(1, 7)],
    "vad_train": ["VAD/train.wav"],
    "vad_valid": ["VAD/valid.wav"],
    "mm1": ["multi-mic/speech_-0.82918_0.55279_-0.082918.flac"],
    "mm2": ["multi-mic/speech_-0.98894_0_0.14834.flac"],
    "libri_a": ["librimix:dev/s1/example1_example5.wav", "librimix:dev/s1/example2_example6.wav"],
    "libri_b": ["librimix:dev/s2/example1_example5.wav", "librimix:dev/s2/example2_example6.wav"],
    "lj": ["TTS/LJ050-0131.wav"],
}
STEADY = {
    "noise1": "noise/noise1.wav", "noise2": "noise/noise2.wav", "noise3": "noise/noise3.wav",
    "noise4": "noise/noise4.wav", "noise5": "noise/noise5.wav",
}
THUNDER = {
    "thunder3": "ESC50/audio/3-103051-C-19.wav", "thunder4": "ESC50/audio/4-156993-A-19.wav",
    "thunder5": "ESC50/audio/5-156999-C-19.wav",
}
RIRS = {f"rir{k}": f"RIRs/rir{k}.wav" for k in range(1, 5)}


@dataclass(frozen=True)
class Split:
    speakers: tuple   # talkers of the mixtures
    babble: tuple     # talkers of the babble noise
    steady: tuple
    thunder: tuple
    rirs: tuple


SPLITS = {
    # Too few dev talkers for 5-talker babble: four of them also speak faster or
    # slower (higher or lower, other-sounding voices).
    "dev": Split(speakers=("asr1", "asr2", "vad_train", "mm1"),
                 babble=("asr1", "asr2", "vad_train", "mm1", "mm2",
                         "asr1@1.15", "asr2@0.87", "vad_train@1.15", "mm2@1.15"),
                 steady=("noise1", "noise2", "noise4"), thunder=("thunder3",),
                 rirs=("rir1", "rir2")),
    # The shared corpus' noises are noise3 and noise5; its talkers libri_a and libri_b.
    "eval": Split(speakers=("libri_a", "libri_b", "lj", "vad_valid"),
                  babble=("libri_a", "libri_b", "lj", "vad_valid", "mm2", "asr1", "asr2"),
                  steady=("noise3", "noise5"), thunder=("thunder4", "thunder5"),
                  rirs=("rir3", "rir4")),
}
KINDS = ("steady", "bursty", "babble3", "babble5")
SNRS = (0.0, -5.0)
LEAKAGES = (None, -20.0, -10.0, -5.0)
ROOMS = ("close", "far")


def load(path):
    """Mono float64 at :data:`RATE`."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = torch.from_numpy(data[:, 0].copy())
    if rate != RATE:
        mono = torchaudio.functional.resample(mono, rate, RATE)
    return mono.double().numpy()


class Library:
    """The talkers, noises and RIRs of a split, read once."""

    def __init__(self, samples, librimix, split):
        def path(name):
            if name.startswith("librimix:"):
                return Path(librimix) / "Libri2Mix" / "wav8k" / "min" / name[len("librimix:"):]
            return Path(samples) / name

        self.split = split
        self.talkers = {}
        for talker in set(split.speakers) | set(split.babble):
            name, _, speed = talker.partition("@")
            files = [load(path(f)) for f in TALKERS[name]]
            if speed:
                files = [self._faster(f, float(speed)) for f in files]
            self.talkers[talker] = files
        self.steady = [load(path(STEADY[n])) for n in split.steady]
        self.thunder = [load(path(THUNDER[n])) for n in split.thunder]
        self.rirs = [self._direct_first(load(path(RIRS[n]))) for n in split.rirs]

    @staticmethod
    def _faster(signal, speed):
        # Played ``speed`` times faster: shorter, and higher in pitch and formants.
        tensor = torch.from_numpy(signal).float()
        return torchaudio.functional.resample(tensor, round(RATE * speed), RATE).double().numpy()

    @staticmethod
    def _direct_first(rir):
        # Start at the direct path, so that reverberant speech stays aligned in time.
        return rir[int(np.argmax(np.abs(rir))):]


def _unit(x):
    return x / np.sqrt(np.mean(x ** 2) + 1e-20)


def _excerpt(rng, signal, n):
    """``n`` samples of ``signal`` from a random start, tiled when shorter."""
    if len(signal) < n:
        signal = np.tile(signal, n // len(signal) + 1)
    start = int(rng.integers(0, len(signal) - n + 1))
    return signal[start:start + n]


def _utterances(rng, lib, talker, n):
    """``n`` samples of one talker: utterances one after another, pauses between."""
    parts, total = [], 0
    files = lib.talkers[talker]
    while total < n + RATE:
        utt = files[int(rng.integers(len(files)))]
        pause = np.zeros(int(rng.uniform(0.1, 0.5) * RATE))
        parts += [utt, pause]
        total += len(utt) + len(pause)
    return _excerpt(rng, np.concatenate(parts), n)


def _room(rng, lib, signal, far):
    if not far:
        return signal
    rir = lib.rirs[int(rng.integers(len(lib.rirs)))]
    return fftconvolve(signal, rir)[: len(signal)]


def _bursts(rng, n):
    """A gate of random bursts (0.1-0.6 s on, 0.2-1 s off) with 10 ms ramps."""
    gate = np.zeros(n)
    pos = int(rng.uniform(0, 0.5) * RATE)
    ramp = int(0.01 * RATE)
    while pos < n:
        on = int(rng.uniform(0.1, 0.6) * RATE)
        shape = np.ones(on)
        shape[:ramp] = np.linspace(0, 1, ramp)
        shape[-ramp:] = np.linspace(1, 0, ramp)
        gate[pos:pos + on] = shape[: n - pos]
        pos += on + int(rng.uniform(0.2, 1.0) * RATE)
    return gate


def make_noise(rng, lib, kind, exclude, far, n):
    if kind == "steady":
        return _excerpt(rng, lib.steady[int(rng.integers(len(lib.steady)))], n)
    if kind == "bursty":
        if rng.random() < 0.5:
            return _excerpt(rng, lib.thunder[int(rng.integers(len(lib.thunder)))], n)
        noise = _excerpt(rng, lib.steady[int(rng.integers(len(lib.steady)))], n)
        return noise * _bursts(rng, n)
    count = int(kind[len("babble"):])
    others = [t for t in lib.split.babble if t.partition("@")[0] not in exclude]
    if len(others) < count:
        raise ValueError(f"{kind}: only {len(others)} talkers besides the mixture's")
    chosen = rng.choice(others, size=count, replace=False)
    gains = 10 ** (rng.uniform(-3, 3, size=count) / 20)
    return sum(g * _unit(_room(rng, lib, _utterances(rng, lib, t, n), far))
               for g, t in zip(gains, chosen))


def make_sources(rng, lib, kind, snr, far):
    """``[T, 3]``: talker 1, talker 2, noise (at ``snr`` dB below the talkers' mean power)."""
    n = int(SECONDS * RATE)
    pair = rng.choice(lib.split.speakers, size=2, replace=False)
    speech = [_unit(_room(rng, lib, _utterances(rng, lib, t, n), far)) for t in pair]
    speech[1] = speech[1] * 10 ** (rng.uniform(-2.5, 2.5) / 20)
    mean_power = np.mean([np.mean(s ** 2) for s in speech])
    noise = _unit(make_noise(rng, lib, kind, set(pair), far, n)) * np.sqrt(mean_power * 10 ** (snr / 10))
    return np.stack([*speech, noise], axis=1)


def with_leakage(rng, sources, leakage):
    """Each output: its source plus the others at random weights, together ``leakage`` dB below."""
    if leakage is None:
        return sources.copy()
    outputs = np.empty_like(sources)
    for k in range(sources.shape[1]):
        others = [j for j in range(sources.shape[1]) if j != k]
        leak = sum(rng.uniform(0.3, 1.0) * _unit(sources[:, j]) for j in others)
        own = np.mean(sources[:, k] ** 2)
        outputs[:, k] = sources[:, k] + _unit(leak) * np.sqrt(own * 10 ** (leakage / 10))
    return outputs


def cases(lib, n_mixtures, seed):
    """``(condition, outputs [T, 3])`` for every condition and mixture; the noise is output 2."""
    for index, condition in enumerate(itertools.product(KINDS, SNRS, LEAKAGES, ROOMS)):
        kind, snr, leakage, room = condition
        rng = np.random.default_rng([seed, index])
        for _ in range(n_mixtures):
            sources = make_sources(rng, lib, kind, snr, far=room == "far")
            yield condition, torch.from_numpy(with_leakage(rng, sources, leakage)).float()


def spectral_structure_only(outputs, rate):
    """The identification before ``nass.inference.noise_id``: the lowest :func:`speech_likeness`."""
    scores = [speech_likeness(outputs[:, k], rate) for k in range(outputs.shape[-1])]
    ranked = sorted(scores)
    return NoiseChoice(index=scores.index(ranked[0]), scores=scores, margin=ranked[1] - ranked[0])


def run(lib, n_mixtures, seed, identify=identify_noise):
    """``{condition: (correct picks, picks)}`` and ``(margin, right)`` of every pick."""
    results, margins = {}, []
    for condition, outputs in cases(lib, n_mixtures, seed):
        correct, total = results.get(condition, (0, 0))
        for order in itertools.permutations(range(3)):
            found = identify(outputs[:, list(order)], RATE)
            right = order[found.index] == 2
            correct, total = correct + right, total + 1
            margins.append((found.margin, right))
        results[condition] = (correct, total)
    return results, margins


def _leak_name(leakage):
    return "none" if leakage is None else f"{leakage:g} dB"


def _pct(correct, total):
    return 100.0 * correct / max(total, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", required=True, type=Path,
                        help="SpeechBrain's tests/samples folder")
    parser.add_argument("--librimix", type=Path, default=LIBRIMIX,
                        help="the real-speech mini Libri2Mix (holding Libri2Mix/)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="eval")
    parser.add_argument("--mixtures", type=int, default=10, help="mixtures per condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true",
                        help="measure the earlier identification instead (the lowest "
                             "speech_likeness; its margins are not log-odds)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the features are many small steps)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(machine_summary())
    lib = Library(args.samples, args.librimix, SPLITS[args.split])
    results, margins = run(lib, args.mixtures, args.seed,
                           spectral_structure_only if args.baseline else identify_noise)
    method = "lowest speech_likeness (baseline)" if args.baseline else "nass.inference.noise_id"
    print(f"split {args.split}, {method}: {args.mixtures} mixtures per condition, 6 orders each; "
          f"accuracy in % of picks\n")

    def total(match):
        picked = [v for k, v in results.items() if match(*k)]
        return sum(c for c, _ in picked), sum(t for _, t in picked)

    rows = []
    for kind, snr, room in itertools.product(KINDS, SNRS, ROOMS):
        row = [kind, f"{snr:g}", room]
        for leakage in LEAKAGES:
            row.append(f"{_pct(*results[kind, snr, leakage, room]):.1f}")
        rows.append(row)
    rows.append(["all", "", ""] + [f"{_pct(*total(lambda k, s, l, r, x=x: l == x)):.1f}"
                                   for x in LEAKAGES])
    print(format_table(["noise", "SNR dB", "speakers"] + [f"leak {_leak_name(x)}" for x in LEAKAGES],
                       rows))
    wrong = sorted(m for m, right in margins if not right)
    flagged = sum(m < CLOSE_MARGIN for m, _ in margins)
    print(f"\nwrong picks: {len(wrong)} of {len(margins)}, {sum(m < CLOSE_MARGIN for m in wrong)} "
          f"of them flagged as close calls (margin < {CLOSE_MARGIN}); their margins: "
          f"{', '.join(f'{m:.2f}' for m in wrong[:20])}{' ...' if len(wrong) > 20 else ''}")
    print(f"close calls: {flagged} of {len(margins)} picks "
          f"({_pct(flagged, len(margins)):.1f} %)")
    acc = {x: _pct(*total(lambda k, s, l, r, x=x: l == x)) for x in LEAKAGES}
    print(last_line(acc_none=acc[None], acc_m20=acc[-20.0], acc_m10=acc[-10.0], acc_m5=acc[-5.0],
                    acc_all=_pct(*total(lambda *k: True)), n=len(margins),
                    close_pct=_pct(flagged, len(margins))))


if __name__ == "__main__":
    main()
