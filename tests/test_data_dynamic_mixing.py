"""Dynamic mixing: fresh, loudness-normalised noisy mixtures at 8 and 16 kHz.

Mixture i of epoch e depends on (seed, e, i) only, whatever reads it: 0 or 2
loader workers, one of two DDP processes, or a resumed run.
"""

import hashlib

import numpy as np
import pyloudnorm
import pytest
import speechbrain as sb
import torch
from speechbrain.utils.epoch_loop import EpochCounter
from torch.utils.data import DistributedSampler

from nass.data.dynamic_mixing import DynamicMixer, dynamic_mixing_dataset
from nass.data.mixing import NOISE_LUFS, SPEECH_LUFS
from nass.data.synthetic import make_librispeech_like, make_noise_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    speech = make_librispeech_like(root / "LibriSpeech", n_speakers=4, duration=2.0)
    noise = make_noise_folder(root / "noise", n_files=2, duration=2.5, sample_rate=16000)
    return speech, noise


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.slow
def test_examples_are_normalised_sums_at_the_recipe_rate(folders, rate):
    mixer = DynamicMixer(*folders, num_spks=2, sample_rate=rate, length=rate, seed=0)
    meter = pyloudnorm.Meter(rate)
    for index in range(3):
        ex = mixer.mixture(1, index)
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


def test_a_mixture_is_a_function_of_seed_epoch_and_index(folders):
    a = DynamicMixer(*folders, num_spks=2, sample_rate=8000, length=4000, seed=1)
    b = DynamicMixer(*folders, num_spks=2, sample_rate=8000, length=4000, seed=1)
    other_seed = DynamicMixer(*folders, num_spks=2, sample_rate=8000, length=4000, seed=2)
    first = a.mixture(3, 5)["mix"]
    a.mixture(3, 6)   # what was drawn before does not matter
    assert torch.equal(first, b.mixture(3, 5)["mix"]) and torch.equal(first, a.mixture(3, 5)["mix"])
    for different in (a.mixture(3, 6), a.mixture(4, 5), other_seed.mixture(3, 5)):
        assert not torch.allclose(first, different["mix"])


def test_too_few_speakers_or_no_noise_is_a_clear_error(folders, tmp_path):
    speech, noise = folders
    with pytest.raises(ValueError, match="has 4 speaker folder.* 5 are needed"):
        DynamicMixer(speech, noise, num_spks=5, sample_rate=8000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .wav/.flac noise files"):
        DynamicMixer(speech, tmp_path / "empty", num_spks=2, sample_rate=8000)


def _fingerprint(signal):
    return hashlib.sha1(signal.numpy().tobytes()).hexdigest()


def _dm_hparams(folders, n, workers=0):
    speech, noise = folders
    return {"base_folder_dm": str(speech), "noise_folder_dm": str(noise), "num_spks": 2,
            "sample_rate": 8000, "training_signal_len": 2000, "dm_examples_per_epoch": n,
            "seed": 1234, "dataloader_opts": {"batch_size": 1, "num_workers": workers},
            "epoch_counter": EpochCounter(limit=5)}


def _epoch(hparams, epoch, sampler=None):
    """The mixtures (fingerprints, in reading order) of ``epoch``, read as the Brain reads them."""
    data = dynamic_mixing_dataset(hparams)
    hparams["epoch_counter"].current = epoch
    loader = sb.dataio.dataloader.make_dataloader(data, sampler=sampler, **hparams["dataloader_opts"])
    return [_fingerprint(batch.mix_sig[0][0]) for batch in loader]


def test_epochs_are_the_same_with_0_or_2_workers_and_new_every_epoch(folders):
    one = _epoch(_dm_hparams(folders, 8), epoch=1)
    two_workers = _epoch(_dm_hparams(folders, 8, workers=2), epoch=1)
    assert two_workers == one
    assert len(set(two_workers)) == 8   # no worker repeats another's mixtures
    second = _epoch(_dm_hparams(folders, 8, workers=2), epoch=2)
    assert len(set(second)) == 8 and not set(second) & set(one)


def test_ddp_processes_read_disjoint_mixtures(folders):
    hparams = _dm_hparams(folders, 8)
    shards = []
    for rank in (0, 1):
        sampler = DistributedSampler(range(8), num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(1)
        shards.append(_epoch(hparams, epoch=1, sampler=sampler))
    assert len(shards[0]) == len(shards[1]) == 4
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(_epoch(hparams, epoch=1))


def test_persistent_workers_are_refused(folders):
    hparams = _dm_hparams(folders, 4, workers=2)
    hparams["dataloader_opts"]["persistent_workers"] = True
    with pytest.raises(ValueError, match="persistent_workers: False"):
        dynamic_mixing_dataset(hparams)
