"""Permutation-invariant assignment of outputs to targets, per utterance.

The convention everywhere in ``nass``: an *assignment* is a LongTensor
``[B, R]`` whose entry ``[b, r]`` is the index of the output matched to target
``r`` of utterance ``b``. ``align(estimates, assignment)[..., r]`` is then the
estimate of target ``r``, whatever the permutation (3-cycles included), and
every utterance of a batch has its own.

Example
-------
>>> import torch
>>> losses = torch.tensor([[[5., 0., 5.], [5., 5., 0.], [0., 5., 5.]]])  # [B, outputs, targets]
>>> assignment, loss = best_assignment(losses)
>>> assignment.tolist(), loss.tolist()
([[2, 0, 1]], [0.0])
>>> est = torch.arange(3.).reshape(1, 1, 3)
>>> align(est, assignment).tolist()
[[[2.0, 0.0, 1.0]]]
"""

import itertools
from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def _permutations(n):
    # Plain tuples: a cached tensor made under inference_mode could not enter autograd later.
    return tuple(itertools.permutations(range(n)))


def best_assignment(loss_matrix, fixed_last=False):
    """Chooses, per utterance, the output-to-target matching of least mean loss.

    Arguments
    ---------
    loss_matrix : torch.Tensor
        ``[B, O, R]`` loss of output ``o`` against target ``r`` (O == R).
    fixed_last : bool
        Keep the last output on the last target (the fixed noise slot) and
        permute the others only.

    Returns
    -------
    assignment : torch.LongTensor
        ``[B, R]``, output index for each target.
    loss : torch.Tensor
        ``[B]``, mean loss of the matched pairs (differentiable).
    """
    if loss_matrix.dim() != 3 or loss_matrix.shape[1] != loss_matrix.shape[2]:
        raise ValueError(
            f"best_assignment: loss_matrix must be [B, O, R] with O == R, got "
            f"{tuple(loss_matrix.shape)}"
        )
    batch, n = loss_matrix.shape[:2]
    n_free = n - 1 if fixed_last else n
    perms = torch.tensor(_permutations(n_free), dtype=torch.long, device=loss_matrix.device)
    if fixed_last:
        last = torch.full((perms.shape[0], 1), n - 1, dtype=torch.long, device=perms.device)
        perms = torch.cat([perms, last], dim=1)
    # perms[p, r] = output for target r under candidate p; gather loss[b, perms[p, r], r].
    targets = torch.arange(n, device=loss_matrix.device)
    candidate = loss_matrix[:, perms, targets].mean(dim=-1)
    best = candidate.detach().argmin(dim=1)
    assignment = perms[best]
    return assignment, candidate[torch.arange(batch, device=best.device), best]


def align(estimates, assignment):
    """Reorders ``estimates`` ``[B, ..., O]`` into target order ``[B, ..., R]``."""
    if assignment.shape[0] != estimates.shape[0]:
        raise ValueError(
            f"align: assignment covers {assignment.shape[0]} utterances, estimates "
            f"{estimates.shape[0]}"
        )
    index = assignment.reshape(assignment.shape[0], *([1] * (estimates.dim() - 2)), -1)
    index = index.expand(*estimates.shape[:-1], assignment.shape[1])
    return torch.gather(estimates, -1, index)
