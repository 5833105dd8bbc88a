"""Long inputs: levels and order carried across windows, and windows capped by what the model takes."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.lobes.models.transformer.Transformer import PositionalEncoding
from speechbrain.utils.checkpoints import Checkpointer

from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY
from nass.inference.windows import longest_input, max_positions, plan_windows, separate_in_chunks
from nass.cli import main
from nass.data.synthetic import make_librimix
from nass.inference import Separator
from nass.model.loading import load_model
from nass.metrics import pairwise_si_snr

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """``[T, 3]``: two synthetic talkers and noise, 8 s at 8 kHz."""
    folder = make_librimix(tmp_path_factory.mktemp("data"), splits=("test",), n_mixtures=1,
                           duration=8.0, seed=3) / "wav8k" / "min" / "test"
    name = next((folder / "mix_both").glob("*.wav")).name
    return torch.stack([torch.from_numpy(sf.read(folder / sub / name, dtype="float32")[0])
                        for sub in ("s1", "s2", "noise")], dim=-1)


def oracle_separator(sources, chunk_size, seed, fixed_last=False, signs=False):
    """Returns, per window, the window's true sources in a random order, each at a random level.

    Windows come in the order of :func:`plan_windows`, which says where each starts.
    """
    rng = np.random.default_rng(seed)
    windows = iter(plan_windows(sources.shape[0], chunk_size))

    def separate(window):
        start, stop = next(windows)
        length = stop - start
        assert torch.allclose(window[0], sources[start:stop].sum(dim=-1))
        n_free = sources.shape[-1] - (1 if fixed_last else 0)
        order = list(rng.permutation(n_free)) + list(range(n_free, sources.shape[-1]))
        gains = torch.from_numpy(rng.uniform(0.3, 2.0, sources.shape[-1])).float()
        if signs:
            gains *= torch.from_numpy(rng.choice([-1.0, 1.0], sources.shape[-1])).float()
        return sources[None, start:start + length][..., order] * gains

    return separate


def best_si_snr_per_source(estimate, sources):
    """SI-SNR (dB) of each source against the estimate output that matches it best."""
    matrix = pairwise_si_snr(estimate[None].double(), sources[None].double())[0]  # [est, src]
    return matrix.max(dim=0).values


@pytest.mark.parametrize("fixed_last,signs", [(False, False), (True, False), (False, True)])
def test_levels_and_order_carry_across_windows(sources, fixed_last, signs):
    mixture = sources.sum(dim=-1)[None]
    separate = oracle_separator(sources, 8000, seed=1, fixed_last=fixed_last, signs=signs)
    stitched = separate_in_chunks(separate, mixture, chunk_size=8000, fixed_last=fixed_last)[0]
    assert len(plan_windows(sources.shape[0], 8000)) > 8
    si_snr = best_si_snr_per_source(stitched, sources)
    assert (si_snr >= 30).all(), si_snr


def test_without_level_matching_the_same_windows_fall_apart(sources, monkeypatch):
    # The test above can fail: with the gains left as the windows give them,
    # the stitched sources are far from the true ones.
    monkeypatch.setattr("nass.inference.windows._match_level", lambda est, *args: est)
    monkeypatch.setattr("nass.inference.windows._fit_to_mixture", lambda est, mixture, free, gain: gain)
    mixture = sources.sum(dim=-1)[None]
    stitched = separate_in_chunks(oracle_separator(sources, 8000, seed=1), mixture, chunk_size=8000)[0]
    assert best_si_snr_per_source(stitched, sources).min() < 15


def with_positions(model, max_len):
    """``model`` with every positional encoding cut to ``max_len`` positions."""
    for module in model.modules():
        if isinstance(module, PositionalEncoding):
            module.pe = module.pe[:, :max_len].clone()
    return model


def test_longest_input_is_exactly_where_the_model_starts_failing():
    for chunk_size, max_len in [(20, 64), (7, 30)]:
        model = with_positions(load_model(HPARAMS, {**TINY, "chunk_size": chunk_size}), max_len)
        longest = longest_input(model.eval())
        with torch.no_grad():
            assert model(torch.randn(1, longest)).shape[1] == longest
            with pytest.raises(RuntimeError, match="size of tensor"):
                model(torch.randn(1, longest + 1))


def test_the_dprnn_sets_no_bound():
    dprnn = load_model(HPARAMS.with_name("dprnn-libri2mix.yaml"),
                       {"N_encoder_out": 16, "out_channels": 16, "rnn_hidden": 8,
                        "num_dual_path_layers": 1, "chunk_size": 20})
    assert max_positions(dprnn) is None and longest_input(dprnn) is None


@pytest.mark.slow
def test_windows_are_capped_at_what_the_model_takes():
    model = load_model(HPARAMS, TINY).eval()
    longest = longest_input(model)   # 2500 chunks of 20 frames: about 25 s at 8 kHz
    assert longest == 199927
    default = Separator(model, 8000)
    assert default.chunk_size == longest and default.window_note is None
    for asked in (math.inf, 60.0):
        separator = Separator(model, 8000, chunk_seconds=asked)
        assert separator.chunk_size == longest
        assert "windows capped at 24.99 s" in separator.window_note
        assert "at most 2500 chunks of 20 frames" in separator.window_note
    assert Separator(model, 8000, chunk_seconds=10.0).window_note is None


def test_an_input_no_longer_than_the_cap_is_separated_in_one_pass():
    model = with_positions(load_model(HPARAMS, TINY).eval(), 64)
    longest = longest_input(model)
    mixture = torch.randn(longest, generator=torch.Generator().manual_seed(0))
    separator = Separator(model, 8000, chunk_seconds=math.inf)
    with torch.no_grad():
        whole = model(mixture[None])[0]
    sources = separator.separate_tensor(mixture, 8000)
    order = list(sources.report["outputs"].values())
    assert all(torch.equal(sources[name], whole[:, k]) for name, k in zip(sources, order))


# Smaller still than TINY, with 4 times fewer encoder frames: 10 minutes in seconds.
TINIER = {**TINY, "kernel_size": 128, "kernel_stride": 64, "num_dual_path_layers": 1,
          "N_encoder_out": 8, "out_channels": 8, "nhead": 1, "d_ffn": 8}


@pytest.fixture
def short_positions(monkeypatch):
    """Models built from now on have positional encodings of 64 positions.

    Keeps a 10-minute input fast: with SpeechBrain's 2500 positions a window
    holds up to 2500 chunks, whose attention is slow on a CPU.
    """
    monkeypatch.setattr(PositionalEncoding.__init__, "__defaults__", (64,))


@pytest.mark.slow
def test_ten_minutes_in_one_pass_are_capped_not_a_tensor_size_error(short_positions, tmp_path,
                                                                    capsys):
    torch.manual_seed(0)
    model = load_model(HPARAMS, TINIER)
    Checkpointer(tmp_path / "save", {"encoder": model.encoder, "masknet": model.masknet,
                                     "decoder": model.decoder}).save_checkpoint(meta={"si-snr": 0.0})
    length = 10 * 60 * 8000
    mixture = 0.1 * np.random.default_rng(0).standard_normal(length)
    sf.write(tmp_path / "long.wav", mixture, 8000, subtype="PCM_16")
    overrides = [arg for key, value in TINIER.items() for arg in (f"--{key}", str(value))]
    status = main(["separate", "--hparams", str(HPARAMS), "--checkpoint", str(tmp_path / "save"),
                   *overrides, "--chunk-seconds", "inf", str(tmp_path / "long.wav")])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "note: windows capped at 5.05 s instead of inf s" in err
    assert "size of tensor" not in err
    for name in ("spk1", "spk2", "noise"):
        assert sf.info(tmp_path / f"long_{name}.wav").frames == length
