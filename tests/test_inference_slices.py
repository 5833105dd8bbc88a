"""Dual-path blocks in slices of sequences: the same outputs, fewer bytes at once, only without gradients."""

import copy
import io

import pytest
import torch

from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY
from nass.inference import Separator
from nass.inference.memory import forward_bytes
from nass.inference.slices import SliceSequences, in_slices
from nass.model.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DPRNN = {"N_encoder_out": 16, "out_channels": 16, "rnn_hidden": 8,
              "num_dual_path_layers": 1, "chunk_size": 20}
MODELS = {"sepformer": (HPARAMS, TINY),
          "dprnn": (HPARAMS.with_name("dprnn-libri2mix.yaml"), TINY_DPRNN)}
# A few sequences per slice for the tiny models (16 features, chunks of 20-250 frames).
FEW = 3 * 20 * 16


def tiny(name, seed=0):
    torch.manual_seed(seed)
    hparams, overrides = MODELS[name]
    return load_model(hparams, overrides).eval()


def blocks(model):
    return [m for m in model.modules() if isinstance(m, SliceSequences)]


@pytest.mark.parametrize("name", MODELS)
def test_sliced_blocks_give_the_outputs_of_whole_batches(name):
    whole = tiny(name)
    sliced = in_slices(copy.deepcopy(whole), elements=FEW)
    assert len(blocks(sliced)) == 2 * len(sliced.masknet.dual_mdl)   # intra and inter of each
    assert list(sliced.state_dict()) == list(whole.state_dict())
    mixture = torch.randn(2, 3 * 8000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = whole(mixture), sliced(mixture)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("grad", [False, True])
def test_slices_are_taken_only_without_gradients(grad):
    model = in_slices(tiny("sepformer"), elements=FEW)
    block = blocks(model)[0]
    calls = []
    layer = next(block.children())           # what the sliced forward calls once per slice
    layer.register_forward_hook(lambda *_: calls.append(1))
    mixture = torch.randn(1, 8000)
    with torch.set_grad_enabled(grad):
        model(mixture)
    assert (len(calls) == 1) == grad, f"{len(calls)} calls of the block's model"


def test_slices_hold_fewer_bytes_at_once_by_the_traced_estimate():
    # A wide feed-forward layer, as the release model's (4 x d_model): most bytes are the blocks'.
    torch.manual_seed(0)
    whole = load_model(HPARAMS, {**TINY, "d_ffn": 256}).eval()
    sliced = in_slices(copy.deepcopy(whole), elements=FEW)
    samples = 10 * 8000
    assert forward_bytes(sliced, samples) < 0.7 * forward_bytes(whole, samples)


def test_a_sliced_model_saves_and_copies_as_a_module():
    model = in_slices(tiny("dprnn"), elements=FEW)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert [type(b).__name__ for b in blocks(loaded)] == [type(b).__name__ for b in blocks(model)]
    assert blocks(copy.deepcopy(model))[0].slice_elements == FEW


def test_elements_must_be_a_whole_number():
    with pytest.raises(ValueError, match="elements must be a whole number >= 1, got 0"):
        in_slices(tiny("sepformer"), elements=0)


def test_the_separator_runs_the_model_in_slices_on_the_cpu():
    separator = Separator(tiny("dprnn"), 8000)
    assert [type(b).__name__ for b in blocks(separator.model)] == ["SlicedSBRNNBlock"] * 2
