"""The recipes' Adam: fused on CUDA, SpeechBrain's default elsewhere, the same steps."""

import pytest
import torch

from nass.training.optimizer import adam


def steps(optimizer_factory, device, n=5):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 5, device=device)),
              torch.nn.Parameter(torch.randn(5, device=device))]
    optimizer = optimizer_factory(params)
    for k in range(n):
        for p in params:
            p.grad = torch.sin(p.detach() * (k + 1))
        optimizer.step()
    return optimizer, [p.detach().cpu() for p in params]


def test_on_the_cpu_it_is_speechbrains_adam_exactly():
    optimizer, ours = steps(lambda p: adam(p, lr=1e-2, weight_decay=0), "cpu")
    assert not optimizer.defaults["fused"]
    _, theirs = steps(lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_param_groups_and_an_explicit_choice_are_kept():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert adam([{"params": params}], lr=1e-3).param_groups[0]["params"] == params
    assert adam(params, lr=1e-3, foreach=False).defaults["foreach"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused Adam runs on CUDA")
def test_on_cuda_it_is_fused_and_steps_as_the_default():
    optimizer, fused = steps(lambda p: adam(p, lr=1e-2), "cuda")
    assert optimizer.defaults["fused"]
    _, default = steps(lambda p: torch.optim.Adam(p, lr=1e-2), "cuda")
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(fused, default))
