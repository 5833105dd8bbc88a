"""Dynamic mixing: fresh, loudness-normalised noisy mixtures at 8 and 16 kHz."""

import numpy as np
import pyloudnorm
import pytest
import torch

from nass.data.dynamic_mixing import NOISE_LUFS, SPEECH_LUFS, DynamicMixer
from nass.data.synthetic import make_librispeech_like, make_noise_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    speech = make_librispeech_like(root / "LibriSpeech", n_speakers=4, duration=2.0)
    noise = make_noise_folder(root / "noise", n_files=2, duration=2.5, sample_rate=16000)
    return speech, noise


@pytest.mark.parametrize("rate", [8000, 16000])
def test_examples_are_normalised_sums_at_the_recipe_rate(folders, rate):
    mixer = DynamicMixer(*folders, num_spks=2, sample_rate=rate, length=rate, seed=0)
    meter = pyloudnorm.Meter(rate)
    for _ in range(3):
        ex = mixer.draw()
        assert set(ex) == {"mix", "s1", "s2", "noise"}
        assert all(v.shape == (rate,) for v in ex.values())
        torch.testing.assert_close(ex["mix"], ex["s1"] + ex["s2"] + ex["noise"])
        assert float(ex["mix"].abs().max()) <= 0.9 + 1e-6
        # Levels are LibriMix's unless the whole mix had to be scaled down to avoid clipping.
        scaled = float(ex["mix"].abs().max()) > 0.9 - 1e-4
        for key, (low, high) in (("s1", SPEECH_LUFS), ("s2", SPEECH_LUFS), ("noise", NOISE_LUFS)):
            lufs = meter.integrated_loudness(ex[key].double().numpy())
            assert lufs <= high + 0.5 and (scaled or lufs >= low - 0.5), (key, lufs)
        assert abs(np.corrcoef(ex["s1"].numpy(), ex["s2"].numpy())[0, 1]) < 0.5


def test_draws_differ_and_seed_repeats(folders):
    a = DynamicMixer(*folders, num_spks=2, sample_rate=8000, length=4000, seed=1)
    b = DynamicMixer(*folders, num_spks=2, sample_rate=8000, length=4000, seed=1)
    first, again = a.draw(), b.draw()
    torch.testing.assert_close(first["mix"], again["mix"])
    assert not torch.allclose(first["mix"], a.draw()["mix"])


def test_too_few_speakers_or_no_noise_is_a_clear_error(folders, tmp_path):
    speech, noise = folders
    with pytest.raises(ValueError, match="has 4 speaker folder.* 5 are needed"):
        DynamicMixer(speech, noise, num_spks=5, sample_rate=8000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .wav/.flac noise files"):
        DynamicMixer(speech, tmp_path / "empty", num_spks=2, sample_rate=8000)
