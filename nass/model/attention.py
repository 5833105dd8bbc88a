"""SpeechBrain's multi-head attention through PyTorch's fused kernel, same parameters.

SpeechBrain's transformer layers ask ``nn.MultiheadAttention`` for attention
weights, so PyTorch computes attention explicitly (scores, softmax, weights,
all kept for the backward). :class:`FusedMultiheadAttention` computes the same
function with ``scaled_dot_product_attention`` on the same ``nn.MultiheadAttention``
(``att``: state dicts and checkpoints unchanged). Why not a subclass of
SpeechBrain's module that asks for no weights: handed three tensors,
``nn.MultiheadAttention`` projects query, key and value separately and feeds
the kernel a strided layout: 1.1 to 2.2x slower per call, up to 12 % on the
whole release-size model on a CPU (``benchmarks/attention.py``, benchmarks/README.md).

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.dual_path import SBTransformerBlock
>>> torch.manual_seed(0) and None
>>> block = SBTransformerBlock(num_layers=2, d_model=16, nhead=2, d_ffn=32, dropout=0,
...                            use_positional_encoding=True, norm_before=True)
>>> x = torch.randn(3, 50, 16)
>>> explicit = block(x)
>>> keys = list(block.state_dict())
>>> block = use_fused_attention(block)
>>> type(block.mdl.layers[0].self_att).__name__, list(block.state_dict()) == keys
('FusedMultiheadAttention', True)
>>> bool((block(x) - explicit).abs().max() < 1e-5)
True
"""

import torch
import torch.nn.functional as F
from speechbrain.nnet.attention import MultiheadAttention
from torch import nn


class FusedMultiheadAttention(nn.Module):
    """SpeechBrain's ``MultiheadAttention`` computed by ``scaled_dot_product_attention``.

    Same call and conventions as ``speechbrain.nnet.attention.MultiheadAttention``
    (``[B, L, E]`` inputs; ``attn_mask`` and ``key_padding_mask`` as
    ``nn.MultiheadAttention`` takes them: boolean True masks a position out,
    floats are added to the scores; ``pos_embs`` added to the mask), but the
    attention weights are not computed: where they are asked for, None
    is returned in their place.

    Arguments
    ---------
    att : torch.nn.MultiheadAttention
        The parameters, used as they are (not copied). Needs query, key and
        value of one size, no ``add_bias_kv`` and no ``add_zero_attn``,
        as SpeechBrain's transformers build it.
    """

    def __init__(self, att):
        super().__init__()
        if not fusable(att):
            raise ValueError(
                "FusedMultiheadAttention needs an nn.MultiheadAttention with equal "
                "query/key/value sizes and no add_bias_kv or add_zero_attn"
            )
        self.att = att

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None,
                return_attn_weights=True, pos_embs=None):
        att = self.att
        batch, q_len, embed = query.shape
        k_len = key.shape[1]
        heads = att.num_heads
        if query is key and key is value:
            # Self-attention (the transformers' case): one matmul for q, k and v.
            q, k, v = F.linear(query, att.in_proj_weight, att.in_proj_bias).chunk(3, dim=-1)
        else:
            weights = att.in_proj_weight.chunk(3)
            biases = att.in_proj_bias.chunk(3) if att.in_proj_bias is not None else (None,) * 3
            q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))
        # [B, T, E] -> [B, heads, T, E / heads]
        q = q.view(batch, q_len, heads, -1).transpose(1, 2)
        k = k.view(batch, k_len, heads, -1).transpose(1, 2)
        v = v.view(batch, k_len, heads, -1).transpose(1, 2)
        if pos_embs is not None:
            attn_mask = pos_embs if attn_mask is None else attn_mask + pos_embs
        bias = attention_bias(attn_mask, key_padding_mask, batch, heads, q_len, k_len, q.dtype)
        dropout = att.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        out = att.out_proj(out.transpose(1, 2).reshape(batch, q_len, embed))
        if return_attn_weights:
            return out, None
        return out


def fusable(att):
    """Whether :class:`FusedMultiheadAttention` computes ``att`` exactly."""
    return (
        isinstance(att, nn.MultiheadAttention)
        and att._qkv_same_embed_dim
        and att.bias_k is None
        and att.bias_v is None
        and not att.add_zero_attn
    )


def attention_bias(attn_mask, key_padding_mask, batch, heads, q_len, k_len, dtype):
    """``nn.MultiheadAttention``'s two masks as one additive ``[B or 1, heads or 1, L, S]`` bias.

    None when there is no mask. Boolean masks (True: not attended) become
    ``-inf``; float masks are added as they are. ``attn_mask`` is ``[L, S]``
    or ``[B * heads, L, S]``, ``key_padding_mask`` ``[B, S]``.

    >>> attention_bias(None, torch.tensor([[False, True]]), 1, 2, 1, 2, torch.float32)
    tensor([[[[0., -inf]]]])
    """
    bias = None
    if attn_mask is not None:
        bias = _additive(attn_mask, dtype)
        if bias.dim() == 3:
            bias = bias.view(batch, heads, q_len, k_len)
    if key_padding_mask is not None:
        padding = _additive(key_padding_mask, dtype).view(batch, 1, 1, k_len)
        bias = padding if bias is None else bias + padding
    return bias


def _additive(mask, dtype):
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            mask, float("-inf")
        )
    return mask.to(dtype)


def use_fused_attention(module):
    """Swaps every SpeechBrain ``MultiheadAttention`` in ``module`` for the fused one, in place.

    The swapped modules share their ``nn.MultiheadAttention`` (parameters,
    names and all) with the originals; attention modules it cannot compute
    exactly (see :func:`fusable`) are left as they are. Returns ``module``,
    or its replacement when ``module`` itself is an attention module.
    """
    if isinstance(module, MultiheadAttention) and fusable(module.att):
        return FusedMultiheadAttention(module.att).train(module.training)
    for name, child in module.named_children():
        swapped = use_fused_attention(child)
        if swapped is not child:
            setattr(module, name, swapped)
    return module
