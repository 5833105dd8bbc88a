"""Fused attention: SpeechBrain's function and parameters, through scaled_dot_product_attention."""

import copy

import pytest
import torch
from speechbrain.nnet.attention import MultiheadAttention

from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY
from nass.model.attention import FusedMultiheadAttention, use_fused_attention
from nass.model.loading import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def pair(seed=0, **overrides):
    """The tiny recipe Sepformer with SpeechBrain's attention, and the same weights fused."""
    torch.manual_seed(seed)
    explicit = load_model(HPARAMS, {**TINY, "fused_attention": False, **overrides})
    fused = use_fused_attention(copy.deepcopy(explicit))
    return explicit, fused


def test_the_recipes_build_fused_attention_with_speechbrains_state_dict():
    explicit, _ = pair()
    torch.manual_seed(0)
    recipe = load_model(HPARAMS, TINY)
    attention = [m for m in recipe.modules() if isinstance(m, (MultiheadAttention,
                                                               FusedMultiheadAttention))]
    assert attention and all(isinstance(m, FusedMultiheadAttention) for m in attention)
    assert list(recipe.state_dict()) == list(explicit.state_dict())
    for name, value in explicit.state_dict().items():
        assert torch.equal(recipe.state_dict()[name], value), name
    # A checkpoint of either loads into the other, strictly.
    recipe.masknet.load_state_dict(explicit.masknet.state_dict(), strict=True)
    explicit.masknet.load_state_dict(recipe.masknet.state_dict(), strict=True)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fused_separator_equals_speechbrains_outputs_and_gradients(mode):
    explicit, fused = pair(seed=1)
    explicit.train(mode == "train")
    fused.train(mode == "train")
    mix = torch.randn(2, 1600, generator=torch.Generator().manual_seed(0))
    est_e, reps_e = explicit(mix, return_reps=True)
    est_f, reps_f = fused(mix, return_reps=True)
    assert est_e.abs().max() > 1e-3  # the comparison is not between zeros
    assert_close(est_f, est_e)
    assert_close(reps_f, reps_e)
    (est_e.square().mean() + reps_e.mean()).backward()
    (est_f.square().mean() + reps_f.mean()).backward()
    grads_f = dict(fused.named_parameters())
    for name, param in explicit.named_parameters():
        assert_close(grads_f[name].grad, param.grad)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fused_module_takes_speechbrains_masks(mode):
    torch.manual_seed(2)
    explicit = MultiheadAttention(nhead=4, d_model=16).train(mode == "train")
    fused = FusedMultiheadAttention(explicit.att).train(mode == "train")
    x, memory = torch.randn(3, 7, 16), torch.randn(3, 5, 16)
    padding = torch.tensor([[False] * 7, [False] * 5 + [True] * 2, [False] * 6 + [True]])
    causal = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
    per_head = torch.randn(3 * 4, 7, 5)
    cases = [
        ((x, x, x), {}),
        ((x, x, x), {"key_padding_mask": padding}),
        ((x, x, x), {"attn_mask": causal, "key_padding_mask": padding}),
        ((x, x, x), {"attn_mask": torch.randn(7, 7), "key_padding_mask": padding.float() * -1e4}),
        ((x, memory, memory), {"attn_mask": per_head}),
        ((x, x, x), {"pos_embs": torch.randn(7, 7)}),
    ]
    for args, masks in cases:
        out_e, _ = explicit(*args, **masks)
        out_f, weights = fused(*args, **masks)
        assert weights is None
        assert_close(out_f, out_e)
    assert_close(fused(x, x, x, return_attn_weights=False),
                 explicit(x, x, x, return_attn_weights=False))


def test_attention_it_cannot_compute_exactly_is_left_alone():
    odd = MultiheadAttention(nhead=2, d_model=8, add_bias_kv=True)
    assert use_fused_attention(odd) is odd
    with pytest.raises(ValueError, match="equal query/key/value sizes"):
        FusedMultiheadAttention(odd.att)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_fused_separator_traces():
    _, fused = pair(seed=3)
    fused.eval()
    mix = torch.randn(1, 800)
    traced = torch.jit.trace(fused, mix, check_trace=False)
    assert_close(traced(mix), fused(mix))
