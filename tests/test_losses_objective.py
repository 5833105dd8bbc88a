"""Per-utterance PIT: assignments, 3-cycles, the fixed noise slot, and the objective."""

import itertools

import pytest
import torch

from nass.losses.objective import NASSObjective
from nass.model.outputs import Outputs
from nass.losses.pcl import PatchSampler
from nass.losses.pit import align, best_assignment


def signals(batch, length, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, n, generator=g)


def brute_force(loss_matrix):
    """Best assignment of one utterance by enumerating permutations, written out."""
    n = loss_matrix.shape[0]
    best = None
    for perm in itertools.permutations(range(n)):
        total = sum(float(loss_matrix[perm[r], r]) for r in range(n)) / n
        if best is None or total < best[1]:
            best = (list(perm), total)
    return best


def test_three_cycle_is_aligned_correctly():
    targets = signals(1, 50, 3)
    # Output o holds target cycle[o]: outputs = [t2, t0, t1].
    cycle = [2, 0, 1]
    outputs = targets[..., cycle]
    loss = torch.stack([
        torch.stack([(outputs[0, :, o] - targets[0, :, r]).pow(2).mean() for r in range(3)])
        for o in range(3)
    ]).unsqueeze(0)
    assignment, value = best_assignment(loss)
    # Target r is held by the output o with cycle[o] == r: t0->o1, t1->o2, t2->o0.
    assert assignment.tolist() == [[1, 2, 0]]
    assert float(value) == 0.0
    torch.testing.assert_close(align(outputs, assignment), targets)


def test_each_utterance_gets_its_own_permutation():
    targets = signals(4, 40, 4, seed=1)
    perms = [[0, 1, 2, 3], [1, 2, 0, 3], [3, 0, 1, 2], [2, 3, 1, 0]]
    outputs = torch.stack([targets[b][:, p] for b, p in enumerate(perms)])
    objective = NASSObjective(Outputs(3, noise_output=True), pcl_weight=0.0)
    result = objective(outputs, targets)
    torch.testing.assert_close(align(outputs, result["assignment"]), targets)
    assert (result["separation"] < -60).all()


def test_best_assignment_equals_brute_force_on_random_matrices():
    g = torch.Generator().manual_seed(2)
    loss = torch.rand(6, 4, 4, generator=g)
    assignment, value = best_assignment(loss)
    for b in range(6):
        perm, total = brute_force(loss[b])
        assert assignment[b].tolist() == perm
        assert abs(float(value[b]) - total) < 1e-6


def test_fixed_slot_keeps_noise_last_even_when_pit_would_swap():
    targets = signals(1, 80, 3, seed=3)
    # Output 2 looks like speaker 1 and output 0 like the noise.
    outputs = targets[..., [2, 0, 1]]
    pit = NASSObjective(Outputs(2, noise_output=True, noise_assignment="pit"), pcl_weight=0.0)
    fixed = NASSObjective(Outputs(2, noise_output=True, noise_assignment="fixed"), pcl_weight=0.0)
    assert pit.assign(outputs, targets)[0].tolist() == [[1, 2, 0]]
    assignment, _ = fixed.assign(outputs, targets)
    assert assignment[0, -1] == 2
    assert sorted(assignment[0, :2].tolist()) == [0, 1]


def test_separation_loss_is_mean_negative_si_snr_of_matched_pairs():
    targets = signals(2, 200, 3, seed=4)
    noise = signals(2, 200, 3, seed=5)
    outputs = targets[..., [1, 0, 2]] + 0.3 * noise
    objective = NASSObjective(Outputs(2, noise_output=True), pcl_weight=0.0)
    result = objective(outputs, targets)
    for b in range(2):
        expected = 0.0
        for r in range(3):
            est = outputs[b, :, result["assignment"][b, r]]
            ref = targets[b, :, r]
            est, ref = est - est.mean(), ref - ref.mean()
            proj = (est @ ref) / (ref @ ref + 1e-8) * ref
            expected += -10 * torch.log10(proj.pow(2).sum() / ((est - proj).pow(2).sum() + 1e-8) + 1e-8)
        torch.testing.assert_close(result["separation"][b], expected / 3, atol=1e-4, rtol=1e-5)
    assert result["assignment"].tolist() == [[1, 0, 2], [1, 0, 2]]


def test_padding_does_not_enter_the_loss():
    targets = signals(2, 300, 3, seed=6)
    outputs = targets + 0.1 * signals(2, 300, 3, seed=7)
    padded_t, padded_o = targets.clone(), outputs.clone()
    padded_t[1, 200:] = 0
    padded_o[1, 200:] = 5.0   # garbage in the padding
    objective = NASSObjective(Outputs(2, noise_output=True), pcl_weight=0.0)
    got = objective(padded_o, padded_t, lengths=torch.tensor([300, 200]))["loss"]
    alone = objective(outputs[1:, :200], targets[1:, :200])["loss"]
    torch.testing.assert_close(got[1], alone[0])


def test_speaker_loss_drops_the_noise_output():
    targets = signals(1, 200, 3, seed=8)
    outputs = targets[..., [2, 1, 0]].clone()
    outputs[..., 0] = torch.randn(200)   # the noise estimate is bad; speakers perfect
    objective = NASSObjective(Outputs(2, noise_output=True), pcl_weight=0.0)
    assert float(objective.speaker_loss(outputs, targets)) < -60


def test_objective_validates_shapes_and_options():
    objective = NASSObjective(Outputs(2, noise_output=True), pcl_weight=0.0)
    with pytest.raises(ValueError, match=r"expected 3 outputs and targets .* got estimates \(1, 10, 2\)"):
        objective(torch.randn(1, 10, 2), torch.randn(1, 10, 3))
    with pytest.raises(ValueError, match="noise_assignment must be one of"):
        Outputs(2, noise_assignment="last")
    with pytest.raises(ValueError, match="needs noise_output"):
        NASSObjective(Outputs(2, noise_output=False), pcl_weight=1.0)
    with pytest.raises(TypeError, match="must be a nass.model.outputs.Outputs"):
        NASSObjective(2, pcl_weight=0.0)


def test_objective_adds_pcl_per_utterance():
    torch.manual_seed(9)
    sampler = PatchSampler(proj_dim=8)
    objective = NASSObjective(Outputs(2, noise_output=True), pcl_weight=2.0, pcl_num_patches=16)
    targets = signals(2, 160, 3, seed=10)
    outputs = targets[..., [0, 2, 1]]
    reps, clean = torch.randn(3, 2, 8, 20), torch.randn(2, 2, 8, 20)
    result = objective(outputs, targets, reps, clean, patch_sampler=sampler)
    assert (result["pcl"] > 0).all()
    torch.testing.assert_close(result["loss"], result["separation"] + result["pcl"])
    with pytest.raises(ValueError, match="pass sep_reps, clean_reps and patch_sampler"):
        objective(outputs, targets, reps, clean)
