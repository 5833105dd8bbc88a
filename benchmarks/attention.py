"""Attention in the release Sepformer's shapes: SpeechBrain's, SpeechBrain's asking for no weights, nass's.

    python benchmarks/attention.py [--reps 10] [--threads 1] [--device cpu]

Times one attention module on the intra-chunk sequences of a 30 s window
(16 x 250 frames of 256 channels, 8 heads), forward in eval mode and forward
plus backward in training mode, side by side:

* ``speechbrain``: ``speechbrain.nnet.attention.MultiheadAttention`` as the
  transformer layers call it (attention weights computed);
* ``no_weights``: the same module called with ``return_attn_weights=False``
  (what a few-line subclass would do: ``nn.MultiheadAttention`` then reaches
  ``scaled_dot_product_attention``);
* ``nass``: :class:`nass.model.attention.FusedMultiheadAttention`.

Then the release-size separator separating ``--seconds`` of audio with each.
Last line: ``no_weights_over_nass_eval=<ratio> no_weights_over_nass_train=<ratio>
no_weights_over_nass_model=<ratio>`` (medians of paired ratios; above 1: nass's is faster).
"""

import argparse
import copy

import torch
from _common import format_table, interleave, last_line, machine_summary, paired_ratio, use_checkout

use_checkout()
from speechbrain.nnet.attention import MultiheadAttention  # noqa: E402

from nass.model.attention import FusedMultiheadAttention  # noqa: E402
from nass.model.loading import load_model, recipe_hparams  # noqa: E402


class NoWeights(MultiheadAttention):
    """SpeechBrain's module asking ``nn.MultiheadAttention`` for no weights: the subclass measured."""

    def forward(self, query, key, value, attn_mask=None, key_padding_mask=None,
                return_attn_weights=True, pos_embs=None):
        out = super().forward(query, key, value, attn_mask=attn_mask,
                              key_padding_mask=key_padding_mask, return_attn_weights=False,
                              pos_embs=pos_embs)
        return (out, None) if return_attn_weights else out


def separators(device):
    """The release-size separator with SpeechBrain's attention, the subclass, and nass's (same weights)."""
    torch.manual_seed(0)
    speechbrain = load_model(recipe_hparams(), {"fused_attention": False}).to(device).eval()
    no_weights = copy.deepcopy(speechbrain)
    for module in no_weights.modules():
        if type(module) is MultiheadAttention:
            module.__class__ = NoWeights
    nass = load_model(recipe_hparams(), {}).to(device).eval()
    nass.load_state_dict(speechbrain.state_dict())
    return {"speechbrain": speechbrain, "no_weights": no_weights, "nass": nass}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio for the whole model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_summary())
    torch.manual_seed(0)
    speechbrain = MultiheadAttention(nhead=8, d_model=256).to(args.device)
    fused = FusedMultiheadAttention(copy.deepcopy(speechbrain).att)
    x = torch.randn(16, 250, 256, device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    cases = {"speechbrain": lambda m: m(x, x, x)[0],
             "no_weights": lambda m: m(x, x, x, return_attn_weights=False),
             "nass": lambda m: fused(x, x, x)[0]}

    def evaluate(call):
        def run():
            with torch.no_grad():
                return call(speechbrain.eval() if call is not cases["nass"] else fused.eval())
        return run

    def train(call):
        def run():
            module = speechbrain.train() if call is not cases["nass"] else fused.train()
            call(module).square().mean().backward()
        return run

    timings = {mode: interleave({name: wrap(call) for name, call in cases.items()}, args.reps,
                                sync=sync)
               for mode, wrap in (("eval", evaluate), ("train", train))}
    models = separators(args.device)
    mixture = torch.randn(1, round(args.seconds * 8000), device=args.device)

    def separate(model):
        def run():
            with torch.no_grad():
                model(mixture)
        return run

    timings["model"] = interleave({name: separate(m) for name, m in models.items()},
                                  max(2, args.reps // 3), sync=sync)
    modes = ("eval", "train", "model")
    rows = [[name] + [f"{timings[mode].median_ms(name):.1f}" for mode in modes] for name in cases]
    print(format_table(["attention", "eval ms", "train ms", f"model {args.seconds:g} s ms"], rows))
    ratios = {mode: paired_ratio(timings[mode].seconds["no_weights"], timings[mode].seconds["nass"])
              for mode in modes}
    print(last_line(**{f"no_weights_over_nass_{mode}": ratios[mode] for mode in modes}))


if __name__ == "__main__":
    main()
