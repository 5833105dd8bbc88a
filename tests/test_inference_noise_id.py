"""Which output is the noise (nass.inference.noise_id): one voice against noise and babble, in any order."""

import itertools
import json
import math

import pytest
import torch

import nass.inference
from nass.inference.noise_id import (
    FEATURES,
    WEIGHTS_FILE,
    features,
    identify_noise,
    one_voice_scores,
    pick_noise,
    pitch_track,
)

RATE = 8000

pytestmark = pytest.mark.usefixtures("one_thread")


def voice(seconds, f0, seed, rate=RATE):
    """A talker: a gliding pitch with 15 harmonics, in syllables and pauses, and a formant."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    glide = f0 * (1 + 0.15 * torch.sin(2 * math.pi * (0.5 + 0.1 * seed) * t + seed))
    phase = 2 * math.pi * torch.cumsum(glide, dim=0) / rate
    formant = 1 + torch.sin(2 * math.pi * 2.5 * t + seed)
    harmonics = sum(torch.sin(k * phase) * (1 + formant * (k == 3 + seed % 3)) / k
                    for k in range(1, 16))
    syllables = (torch.sin(2 * math.pi * (3.3 + 0.4 * seed) * t + seed) > -0.2).float()
    pauses = (torch.rand(int(seconds * 2) + 1, generator=g) > 0.25).float().repeat_interleave(rate // 2)
    return harmonics * syllables * pauses[: t.numel()]


def babble(seconds, talkers, first_seed=10):
    return sum(voice(seconds, 100 + 37 * k, first_seed + k) for k in range(talkers))


def assert_noise_found_in_every_order(signals, noise_index):
    for order in itertools.permutations(range(len(signals))):
        outputs = torch.stack([signals[k] for k in order], dim=-1)
        assert order[pick_noise(outputs, RATE)] == noise_index, f"order {order}"


@pytest.mark.parametrize("noise", ["steady", "bursts", "babble"])
def test_the_noise_is_found_in_every_order(noise):
    g = torch.Generator().manual_seed(0)
    white = 0.3 * torch.randn(4 * RATE, generator=g)
    signals = {"steady": white,
               "bursts": white * (torch.arange(4 * RATE) // 2400 % 3 == 0),
               "babble": babble(4.0, talkers=5)}
    assert_noise_found_in_every_order([voice(4.0, 110, 1), voice(4.0, 190, 2), signals[noise]], 2)


def test_scores_follow_their_outputs_and_say_how_sure():
    noise = 0.3 * torch.randn(3 * RATE, generator=torch.Generator().manual_seed(1))
    signals = [voice(3.0, 120, 1), noise, voice(3.0, 200, 3)]
    choice = identify_noise(torch.stack(signals, dim=-1), RATE)
    flipped = identify_noise(torch.stack(signals[::-1], dim=-1), RATE)
    assert choice.index == 1 and flipped.index == 1
    assert flipped.scores == pytest.approx(choice.scores[::-1])
    assert choice.margin == pytest.approx(sorted(choice.scores)[1] - min(choice.scores))
    assert not choice.close and max(choice.probabilities) > 0.9
    assert sum(choice.probabilities) == pytest.approx(1.0)
    # Two copies of one signal cannot be told apart: a close call.
    twins = identify_noise(torch.stack([signals[1], signals[1], signals[0]], dim=-1), RATE)
    assert twins.margin == 0 and twins.close


def test_other_rates_are_judged_as_at_8_khz():
    # The same voice made at 16 kHz (harmonics up to 6 kHz) and at 8 kHz.
    assert features(voice(2.0, 150, 4, rate=16000), 16000).tolist() == pytest.approx(
        features(voice(2.0, 150, 4), RATE).tolist(), rel=0.15, abs=0.05)


def test_silence_short_inputs_and_odd_signals_give_finite_scores():
    t = torch.arange(RATE) / RATE
    for signal in (torch.zeros(RATE), torch.zeros(100), torch.sin(2 * math.pi * 440 * t),
                   torch.cat([torch.zeros(RATE), 1e-30 * torch.ones(RATE)])):
        assert torch.isfinite(one_voice_scores(features(signal, RATE)[None])).all()
    periodicity, _, _ = pitch_track(torch.cat([torch.zeros(4000), 1e-3 * torch.randn(4000)]))
    assert periodicity.abs().max() <= 1.0 + 1e-5


def test_shipped_weights_match_the_features_and_the_old_import_works():
    data = json.loads(WEIGHTS_FILE.read_text())
    assert tuple(data["features"]) == FEATURES
    assert all(len(data[key]) == len(FEATURES) for key in ("mean", "scale", "hidden_weights"))
    assert len(data["hidden_bias"]) == len(data["weights"]) == len(data["hidden_weights"][0])
    assert nass.inference.pick_noise is pick_noise
