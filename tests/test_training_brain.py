"""SeparationBrain's logged ratios, step by step (the recipe runs are in test_training_recipe.py)."""

import math

import speechbrain as sb
import torch

from conftest import LIBRIMIX_HPARAMS, TINY
from nass.model.loading import load_model
from nass.training.brain import SeparationBrain


def terms(model, mix, pcl_scale):
    """Per-utterance stand-ins for the separation and PCL terms, both made by the mask network."""
    estimates = model(mix)
    return {"separation": estimates.pow(2).mean(dim=(1, 2)),
            "pcl": pcl_scale * estimates.abs().mean(dim=(1, 2))}


def grad_share(model, step_terms):
    params = [p for p in model.masknet.parameters() if p.requires_grad]
    norms = []
    for name in ("pcl", "separation"):
        grads = torch.autograd.grad(step_terms[name].mean(), params, retain_graph=True,
                                    allow_unused=True)
        norms.append(math.sqrt(sum(float((g ** 2).sum()) for g in grads if g is not None)))
    return norms[0] / norms[1]


def test_pcl_grad_share_leaves_out_non_finite_gradients_and_counts_them(one_thread):
    torch.manual_seed(0)
    model = load_model(LIBRIMIX_HPARAMS, TINY)
    brain = SeparationBrain(modules={"separator": model}, hparams={}, run_opts={"device": "cpu"})
    mix = torch.randn(2, 800, generator=torch.Generator().manual_seed(1))
    keep = torch.ones(2, dtype=torch.bool)
    brain.on_stage_start(sb.Stage.TRAIN)
    first = terms(model, mix, 1.0)
    brain._sample_pcl_grad_share(first, keep)
    # What an fp16 overflow gives: an infinite term, gradients inf/NaN.
    brain._sample_pcl_grad_share(terms(model, mix, float("inf")), keep)
    brain._sample_pcl_grad_share(terms(model, mix, 2.0), keep)
    brain.on_stage_end(sb.Stage.TRAIN, 0.0)
    share = grad_share(model, first)
    assert share > 0
    # PCL doubled doubles its gradient: the mean of the two finite samples is 1.5 times the first.
    assert math.isclose(brain.train_stats["pcl_grad_share"], 1.5 * share, rel_tol=1e-5)
    assert brain.train_stats["pcl_grad_share_skipped"] == 1

    brain.on_stage_start(sb.Stage.TRAIN)
    brain._sample_pcl_grad_share(terms(model, mix, float("inf")), keep)
    brain.on_stage_end(sb.Stage.TRAIN, 0.0)
    assert "pcl_grad_share" not in brain.train_stats
    assert brain.train_stats["pcl_grad_share_skipped"] == 1
