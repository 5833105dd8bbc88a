"""PatchSampler, PatchNCELoss and the PCL term, against computations written out here."""

import math

import pytest
import torch
import torch.nn.functional as F

from nass.losses.pcl import (
    FramePatchSampler, PatchNCELoss, PatchSampler, build_patch_sampler, chance_level, pcl_loss,
)

RELEASE_KEYS = [
    "conv.0.weight", "conv.0.bias", "conv.2.weight", "conv.2.bias",
    "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
]


def release_style_state(dim, seed=0):
    """A state dict shaped like the release's patchsamplenet.ckpt, with random values."""
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "conv.0.weight": (1, 1, 3, 3), "conv.0.bias": (1,),
        "conv.2.weight": (1, 1, 3, 3), "conv.2.bias": (1,),
        "mlp.0.weight": (dim, 1), "mlp.0.bias": (dim,),
        "mlp.2.weight": (dim, dim), "mlp.2.bias": (dim,),
    }
    return {k: torch.randn(s, generator=g) * 0.5 for k, s in shapes.items()}


def reference_features(state, rep, ids):
    """The reference's path, written out: full 2-D convs over the whole image, then index."""
    img = rep.unsqueeze(1)
    h = F.conv2d(img, state["conv.0.weight"], state["conv.0.bias"]).relu()
    h = F.conv2d(h, state["conv.2.weight"], state["conv.2.bias"])
    flat = h.permute(0, 2, 3, 1).flatten(1, 2)          # [B, (N-4)(L-4), 1]
    x = flat[:, ids, :].flatten(0, 1)                    # [B*K, 1]
    x = F.linear(x, state["mlp.0.weight"], state["mlp.0.bias"]).relu()
    x = F.linear(x, state["mlp.2.weight"], state["mlp.2.bias"])
    norm = x.pow(2).sum(1, keepdim=True).pow(0.5)
    return x / (norm + 1e-7)                             # [B*K, D]


def reference_nce(q, p, n, tau=0.07):
    """Per-patch loss for one utterance, as loops: q, p, n are [K, D]."""
    k = q.shape[0]
    out = torch.empty(k, dtype=torch.float64)
    for i in range(k):
        logits = [float(q[i] @ p[i])]
        for j in range(k):
            logits.append(-10.0 if i == j else float(q[i] @ n[j]))
        logits = [v / tau for v in logits]
        m = max(logits)
        lse = m + math.log(sum(math.exp(v - m) for v in logits))
        out[i] = lse - logits[0]
    return out


def test_state_dict_keys_are_the_releases(tmp_path):
    sampler = PatchSampler(proj_dim=256)
    assert sorted(sampler.state_dict()) == sorted(RELEASE_KEYS)
    path = tmp_path / "patchsamplenet.ckpt"
    torch.save(release_style_state(256), path)
    sampler.load_state_dict(torch.load(path), strict=True)


def test_features_equal_full_convolution_path():
    dim = 16
    state = release_style_state(dim, seed=1)
    sampler = PatchSampler(proj_dim=dim)
    sampler.load_state_dict(state)
    reps = [torch.randn(2, 12, 30), torch.randn(2, 12, 30)]
    feats, ids = sampler(reps, num_patches=40)
    assert ids.shape == (40,) and len(set(ids.tolist())) == 40
    assert int(ids.max()) < 8 * 26
    for rep, feat in zip(reps, feats):
        expected = reference_features(state, rep, ids).reshape(2, 40, dim)
        torch.testing.assert_close(feat, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feat.norm(dim=-1), torch.ones(2, 40), atol=1e-5, rtol=0)


def test_given_patch_ids_are_used_and_positions_are_row_major():
    sampler = PatchSampler(proj_dim=4)
    sampler.load_state_dict(release_style_state(4, seed=2))
    rep = torch.randn(1, 9, 11)
    # Position (row 3, col 5) of the [5, 7] conv output is flat index 3 * 7 + 5 = 26.
    feats, ids = sampler([rep], num_patches=1, patch_ids=torch.tensor([26]))
    assert ids.tolist() == [26]
    moved = rep.clone()
    moved[0, 3 + 2, 5 + 2] += 10.0   # the centre of that position's 5x5 window
    feats_moved, _ = sampler([moved], num_patches=1, patch_ids=ids)
    assert not torch.allclose(feats[0], feats_moved[0])
    far = rep.clone()
    far[0, 0, 0] += 10.0             # outside the window
    feats_far, _ = sampler([far], num_patches=1, patch_ids=ids)
    torch.testing.assert_close(feats[0], feats_far[0])


def test_more_patches_than_positions_takes_all():
    sampler = PatchSampler(proj_dim=4)
    feats, ids = sampler([torch.randn(1, 6, 7)], num_patches=1000)
    assert sorted(ids.tolist()) == list(range(2 * 3))
    assert feats[0].shape == (1, 6, 4)


@pytest.mark.parametrize("shape", [(1, 4, 20), (1, 20, 4), (20, 30)])
def test_too_small_or_wrong_rank_reps_are_refused(shape):
    with pytest.raises(ValueError, match=r"PatchSampler: .*shape"):
        PatchSampler(proj_dim=4)([torch.randn(*shape)], num_patches=4)


def test_mismatched_reps_and_bad_ids_are_refused():
    sampler = PatchSampler(proj_dim=4)
    with pytest.raises(ValueError, match=r"reps\[1\] has shape \(1, 8, 9\), expected \(1, 8, 10\)"):
        sampler([torch.randn(1, 8, 10), torch.randn(1, 8, 9)], num_patches=4)
    with pytest.raises(ValueError, match=r"patch_ids must lie in \[0, 24\)"):
        sampler([torch.randn(1, 8, 10)], num_patches=4, patch_ids=torch.tensor([24]))


def test_nce_matches_loop_computation():
    g = torch.Generator().manual_seed(3)
    q, p, n = (F.normalize(torch.randn(2, 7, 5, generator=g), dim=-1) for _ in range(3))
    loss = PatchNCELoss(temperature=0.07)(q, p, n)
    assert loss.shape == (2, 7)
    for b in range(2):
        torch.testing.assert_close(loss[b].double(), reference_nce(q[b], p[b], n[b]), atol=1e-4, rtol=1e-5)


def test_nce_does_not_mix_utterances():
    g = torch.Generator().manual_seed(4)
    q, p, n = (F.normalize(torch.randn(3, 6, 4, generator=g), dim=-1) for _ in range(3))
    nce = PatchNCELoss()
    together = nce(q, p, n)
    alone = torch.cat([nce(q[b : b + 1], p[b : b + 1], n[b : b + 1]) for b in range(3)])
    torch.testing.assert_close(together, alone)


def test_nce_gradients_reach_the_query_only():
    q = F.normalize(torch.randn(1, 5, 4), dim=-1).requires_grad_()
    p = F.normalize(torch.randn(1, 5, 4), dim=-1).requires_grad_()
    n = F.normalize(torch.randn(1, 5, 4), dim=-1).requires_grad_()
    PatchNCELoss()(q, p, n).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert p.grad is None and n.grad is None


def test_release_checkpoint_reproduces_reference_per_patch_loss(tmp_path):
    """Sampler loaded from a release-style file + same ids == the reference pipeline."""
    dim = 32
    path = tmp_path / "patchsamplenet.ckpt"
    state = release_style_state(dim, seed=5)
    torch.save(state, path)
    sampler = PatchSampler(proj_dim=dim)
    sampler.load_state_dict(torch.load(path), strict=True)
    g = torch.Generator().manual_seed(6)
    est_spk, clean, est_noise = (torch.randn(1, 16, 50, generator=g).relu() for _ in range(3))
    ids = torch.randperm(12 * 46, generator=g)[:64]
    feats, _ = sampler([est_spk, clean, est_noise], num_patches=64, patch_ids=ids)
    ours = PatchNCELoss(0.07)(*feats)[0]
    q, p, n = (reference_features(state, r, ids) for r in (est_spk, clean, est_noise))
    torch.testing.assert_close(ours.double(), reference_nce(q, p, n), atol=1e-4, rtol=0)


def test_pcl_loss_aligns_each_utterance_with_its_own_permutation():
    torch.manual_seed(7)
    sampler = PatchSampler(proj_dim=8)
    nce = PatchNCELoss()
    est = torch.randn(4, 2, 10, 30)     # C = 3 speakers + noise, batch 2
    clean = torch.randn(3, 2, 10, 30)
    # Utterance 0: a 3-cycle over the speakers; utterance 1: noise on output 0.
    assignment = torch.tensor([[1, 2, 0, 3], [3, 1, 2, 0]])
    ids = torch.randperm(6 * 26)[:20]
    got, _ = pcl_loss(sampler, nce, est, clean, assignment, 20, weight=2.0, patch_ids=ids)
    for b in range(2):
        total = 0.0
        noise_feat = sampler([est[assignment[b, 3], b : b + 1]], 20, ids)[0][0]
        for k in range(3):
            q = sampler([est[assignment[b, k], b : b + 1]], 20, ids)[0][0]
            p = sampler([clean[k, b : b + 1]], 20, ids)[0][0]
            total += nce(q, p, noise_feat).mean()
        torch.testing.assert_close(got[b], total * 2.0 / 3, atol=1e-5, rtol=1e-5)


def test_pcl_loss_shape_errors_name_the_argument():
    sampler, nce = PatchSampler(proj_dim=4), PatchNCELoss()
    with pytest.raises(ValueError, match="estimates has 2 outputs and clean 2 speakers"):
        pcl_loss(sampler, nce, torch.randn(2, 1, 8, 9), torch.randn(2, 1, 8, 9),
                 torch.tensor([[0, 1]]), 4, 1.0)
    with pytest.raises(ValueError, match=r"assignment has shape \(1, 2\), expected \(1, 3\)"):
        pcl_loss(sampler, nce, torch.randn(3, 1, 8, 9), torch.randn(2, 1, 8, 9),
                 torch.tensor([[0, 1]]), 4, 1.0)


def test_pcl_runs_under_bf16_autocast_on_cpu():
    torch.manual_seed(8)
    sampler, nce = PatchSampler(proj_dim=16), PatchNCELoss()
    est = torch.randn(3, 2, 16, 40, requires_grad=True)
    clean = torch.randn(2, 2, 16, 40)
    assignment = torch.tensor([[0, 1, 2], [1, 0, 2]])
    ids = torch.randperm(12 * 36)[:32]
    ref, _ = pcl_loss(sampler, nce, est, clean, assignment, 32, 2.0, patch_ids=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = pcl_loss(sampler, nce, est, clean, assignment, 32, 2.0, patch_ids=ids)
    assert torch.isfinite(low).all()
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, atol=0.1, rtol=0.05)
    low.sum().backward()
    assert est.grad is not None and torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    assert sampler.mlp[2].weight.grad is not None


# ---- frame patches (pcl_patch: frame) --------------------------------------------------------


def test_frame_sampler_embeds_normalised_frames_through_the_mlp():
    torch.manual_seed(9)
    sampler = FramePatchSampler(num_channels=6, proj_dim=5, window=2)
    assert sorted(sampler.state_dict()) == ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]
    rep = torch.rand(2, 6, 12)
    ids = torch.tensor([0, 4, 10])
    feats, got_ids = sampler([rep, 3.0 * rep], num_patches=3, patch_ids=ids)
    assert got_ids.tolist() == [0, 4, 10]
    # Written out: windows of 2 frames ([N, 2] flattened), L2-normalised, MLP, L2-normalised.
    windows = torch.stack([rep[:, :, i:i + 2].reshape(2, 12) for i in ids], dim=1)
    expected = F.normalize(sampler.mlp(F.normalize(windows, dim=-1, eps=1e-7)), dim=-1)
    torch.testing.assert_close(feats[0], expected, atol=1e-5, rtol=1e-5)
    # Loudness does not matter, only which channels are active.
    torch.testing.assert_close(feats[1], feats[0], atol=1e-5, rtol=1e-5)
    assert sampler.num_positions(6, 12) == 11


def test_frame_sampler_centring_removes_the_mean_over_time():
    sampler = FramePatchSampler(num_channels=4, proj_dim=3, centre=True)
    rep = torch.rand(1, 4, 9)
    shifted = rep + torch.rand(1, 4, 1)      # a per-channel offset, constant over time
    ids = torch.arange(9)
    a, _ = sampler([rep], 9, ids)
    b, _ = sampler([shifted], 9, ids)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)


def test_frame_sampler_refuses_wrong_channels_and_ids():
    sampler = FramePatchSampler(num_channels=8, proj_dim=4, window=3)
    with pytest.raises(ValueError, match=r"expected N = 8 channels"):
        sampler([torch.rand(1, 7, 20)], num_patches=4)
    with pytest.raises(ValueError, match=r"patch_ids must lie in \[0, 18\)"):
        sampler([torch.rand(1, 8, 20)], num_patches=4, patch_ids=torch.tensor([18]))
    with pytest.raises(ValueError, match="pcl_patch must be one of"):
        build_patch_sampler(2.0, proj_dim=4, kind="pixel", num_channels=8)


def _masknet_and_reps(n_channels=16, n_frames=60, seed=10):
    """A stand-in mask network (one conv) on ReLU encoder frames, as the separator has it."""
    torch.manual_seed(seed)
    w = torch.rand(2, n_channels, n_frames)                       # Enc(mix), non-negative
    masknet = torch.nn.Conv1d(n_channels, 3 * n_channels, 3, padding=1)
    masks = torch.sigmoid(masknet(w)).reshape(2, 3, n_channels, n_frames).transpose(0, 1)
    clean = torch.rand(2, 2, n_channels, n_frames)
    return masknet, masks * w, clean


def test_frame_pcl_gives_the_mask_network_finite_nonzero_gradients():
    masknet, est, clean = _masknet_and_reps()
    sampler = build_patch_sampler(2.0, proj_dim=8, kind="frame", num_channels=16)
    assignment = torch.tensor([[0, 1, 2], [2, 0, 1]])
    loss, _ = pcl_loss(sampler, PatchNCELoss(), est, clean, assignment, num_patches=32, weight=2.0)
    loss.sum().backward()
    for param in masknet.parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert param.grad.abs().max() > 1e-6
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in sampler.parameters())


def test_scalar_is_still_the_reference_sampler():
    """``pcl_patch: scalar`` builds the sampler the reference-value tests above pin."""
    sampler = build_patch_sampler(2.0, proj_dim=32, kind="scalar", num_channels=256)
    assert type(sampler) is PatchSampler
    state = release_style_state(32, seed=5)
    sampler.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(6)
    est_spk, clean, est_noise = (torch.randn(1, 16, 50, generator=g).relu() for _ in range(3))
    ids = torch.randperm(12 * 46, generator=g)[:64]
    feats, _ = sampler([est_spk, clean, est_noise], num_patches=64, patch_ids=ids)
    q, p, n = (reference_features(state, r, ids) for r in (est_spk, clean, est_noise))
    torch.testing.assert_close(PatchNCELoss(0.07)(*feats)[0].double(), reference_nce(q, p, n),
                               atol=1e-4, rtol=0)


def test_chance_level_is_the_loss_of_equal_logits():
    # Identical embeddings everywhere: every logit is 1 / tau, the loss is ln K per patch.
    feats = F.normalize(torch.ones(1, 16, 4), dim=-1)
    per_patch = PatchNCELoss()(feats, feats, feats)
    torch.testing.assert_close(per_patch, torch.full((1, 16), math.log(16)))
    assert chance_level(16, 2.0) == pytest.approx(2 * math.log(16))
    # Fewer positions than patches asked for: all positions are used, and chance is ln of that.
    for sampler, (n_channels, n_frames), positions in [(PatchSampler(4), (6, 7), 6),
                                                       (FramePatchSampler(8, 4, window=3), (8, 10), 8)]:
        est, clean = torch.randn(3, 1, n_channels, n_frames), torch.randn(2, 1, n_channels, n_frames)
        _, patches = pcl_loss(sampler, PatchNCELoss(), est, clean, torch.tensor([[0, 1, 2]]), 256, 1.0)
        assert patches == positions


def test_frame_pcl_runs_under_bf16_autocast_on_cpu():
    masknet, est, clean = _masknet_and_reps(seed=11)
    sampler = build_patch_sampler(2.0, proj_dim=8, kind="frame", num_channels=16)
    assignment = torch.tensor([[0, 1, 2], [1, 2, 0]])
    ids = torch.randperm(60)[:32]
    ref, _ = pcl_loss(sampler, PatchNCELoss(), est, clean, assignment, 32, 2.0, patch_ids=ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = pcl_loss(sampler, PatchNCELoss(), est, clean, assignment, 32, 2.0, patch_ids=ids)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(low, ref, atol=0.1, rtol=0.05)
    low.sum().backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().max() > 0 for p in masknet.parameters())


def pcl_loss_one_call_per_part(sampler, nce, estimates, clean, assignment, weight, patch_ids):
    """The PCL term as it was computed before the calls were batched: queries, then the
    detached positives and negatives, then one PatchNCE per speaker."""
    n_spk, batch = clean.shape[:2]
    aligned = estimates.transpose(0, 1)[torch.arange(batch)[:, None], assignment].transpose(0, 1)
    queries, _ = sampler(list(aligned[:n_spk]), 0, patch_ids)
    with torch.no_grad():
        fixed, _ = sampler([*clean, aligned[n_spk]], 0, patch_ids)
    total = sum(nce(q, p, fixed[-1]).mean(dim=1) for q, p in zip(queries, fixed[:-1]))
    return total * (weight / n_spk)


@pytest.mark.parametrize("kind", ["scalar", "frame"])
def test_batched_pcl_gives_the_losses_and_gradients_of_one_call_per_part(kind):
    torch.manual_seed(0)
    sampler = build_patch_sampler(2.0, proj_dim=8, kind=kind, num_channels=16)
    nce = PatchNCELoss()
    estimates = torch.rand(3, 2, 16, 40, requires_grad=True)
    clean = torch.rand(2, 2, 16, 40)
    assignment = torch.tensor([[0, 1, 2], [2, 0, 1]])
    patch_ids = sampler.draw_patch_ids((2, 16, 40), 24)
    results = []
    for compute in (lambda: pcl_loss(sampler, nce, estimates, clean, assignment, 24, 2.0,
                                     patch_ids)[0],
                    lambda: pcl_loss_one_call_per_part(sampler, nce, estimates, clean,
                                                       assignment, 2.0, patch_ids)):
        sampler.zero_grad()
        estimates.grad = None
        loss = compute()
        loss.sum().backward()
        results.append((loss.detach(), estimates.grad.clone(),
                        [p.grad.clone() for p in sampler.parameters()]))
    (new, new_grad, new_params), (old, old_grad, old_params) = results
    assert torch.allclose(new, old, rtol=1e-6, atol=1e-6)
    assert torch.allclose(new_grad, old_grad, rtol=1e-5, atol=1e-8)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(new_params, old_params))
