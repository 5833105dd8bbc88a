"""Tests of :mod:`nass.metrics` against independent computations and references.

SI-SNR is checked against a NumPy transcription of its definition and against
SpeechBrain's ``cal_si_snr``; SDR against ``mir_eval.separation.bss_eval_sources``
on speech-like signals (harmonics, intonation, syllabic envelope, coloured
noise) with leakage, noise, FIR distortion and a permutation.
"""

import itertools
import sys

import numpy as np
import pytest
import torch

from nass.data.synthetic import imperfect_estimates
from nass.metrics import pairwise_si_snr, sdr, si_snr, utterance_metrics

SR = 8000


def realish_pair(seed, n_src, seconds):
    """``(estimates, references, perm)`` at 8 kHz (see ``imperfect_estimates``)."""
    return imperfect_estimates(seed, n_src, seconds, SR)


def mir_eval_sdr(references, estimates):
    """mir_eval's SDR, or a skip of this comparison where mir_eval lacks it."""
    try:
        from mir_eval.separation import bss_eval_sources
    except ImportError:
        pytest.skip(
            "mir_eval.separation.bss_eval_sources is not importable (mir_eval is "
            "missing, or >= 0.9 where it was removed); install 'mir_eval<0.9' to "
            "compare nass.metrics.sdr with the reference implementation"
        )
    return bss_eval_sources(references, estimates)[0]


def numpy_si_snr(estimate, reference, eps=1e-8):
    """SI-SNR of 1-D arrays, transcribed from its definition."""
    est = estimate - estimate.mean()
    ref = reference - reference.mean()
    target = np.dot(est, ref) / (np.dot(ref, ref) + eps) * ref
    noise = est - target
    return 10 * np.log10(np.dot(target, target) / (np.dot(noise, noise) + eps) + eps)


# --------------------------------------------------------------------- si_snr


def test_si_snr_matches_numpy_definition():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 4, 500, generator=gen, dtype=torch.float64) + 0.3
    est = 0.7 * ref + 0.5 * torch.randn(3, 4, 500, generator=gen, dtype=torch.float64)
    got = si_snr(est, ref)
    assert got.shape == (3, 4)
    expected = [
        [numpy_si_snr(est[i, j].numpy(), ref[i, j].numpy()) for j in range(4)]
        for i in range(3)
    ]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_si_snr_matches_speechbrain(dtype, atol):
    from speechbrain.nnet.losses import cal_si_snr

    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(400, 2, 3, generator=gen, dtype=dtype)  # [T, B, C]
    est = ref + 0.4 * torch.randn(400, 2, 3, generator=gen, dtype=dtype)
    # cal_si_snr masks its estimate in place: hand it a copy.
    expected = -cal_si_snr(ref, est.clone())[0]  # [B, C], a loss: negated
    got = si_snr(est.permute(1, 2, 0), ref.permute(1, 2, 0))
    torch.testing.assert_close(got, expected.to(dtype), rtol=0, atol=atol)


def test_si_snr_is_scale_invariant_and_hand_checkable():
    # Energies far above eps (1e-8), which would otherwise shift the dB.
    ref = torch.tensor([10.0, -10.0, 10.0, -10.0], dtype=torch.float64)
    err = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)  # ||err||^2 = ||ref||^2 / 100
    assert si_snr(ref + err, ref).item() == pytest.approx(20.0, abs=1e-6)
    assert si_snr(5 * (ref + err) + 2, ref).item() == pytest.approx(20.0, abs=1e-6)


def test_si_snr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"estimate has shape \(2, 10\).*\(2, 11\)"):
        si_snr(torch.zeros(2, 10), torch.zeros(2, 11))


# ------------------------------------------------------------ pairwise_si_snr


def loop_si_snr(estimates, references):
    batch, _, n_est = estimates.shape
    n_ref = references.shape[-1]
    out = torch.empty(batch, n_est, n_ref, dtype=estimates.dtype)
    for b, e, r in itertools.product(range(batch), range(n_est), range(n_ref)):
        out[b, e, r] = si_snr(estimates[b, :, e], references[b, :, r])
    return out


def realish_batch(n_est, n_ref, seconds, dtype):
    """``[B=2, T, E]`` estimates and ``[2, T, R]`` references, real-ish."""
    ests, refs = [], []
    for seed in (10, 11):
        est, ref, _ = realish_pair(seed, max(n_est, n_ref), seconds)
        ests.append(est[:n_est].T)
        refs.append(ref[:n_ref].T)
    return torch.tensor(np.stack(ests), dtype=dtype), torch.tensor(np.stack(refs), dtype=dtype)


@pytest.mark.parametrize("n_est,n_ref", [(2, 2), (3, 2), (3, 3)])
def test_pairwise_si_snr_matches_loop_float64(n_est, n_ref):
    ests, refs = realish_batch(n_est, n_ref, 0.25, torch.float64)
    got = pairwise_si_snr(ests, refs)
    assert got.shape == (2, n_est, n_ref)
    torch.testing.assert_close(got, loop_si_snr(ests, refs), rtol=0, atol=1e-6)


def test_pairwise_si_snr_float32_is_close():
    ests, refs = realish_batch(3, 3, 0.5, torch.float64)
    expected = loop_si_snr(ests, refs)
    got = pairwise_si_snr(ests.float(), refs.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-3)


def test_pairwise_si_snr_near_perfect_estimate_stays_finite():
    _, refs = realish_batch(2, 2, 0.25, torch.float32)
    got = pairwise_si_snr(refs * 3.0, refs)  # energy cancellation at its worst
    assert torch.isfinite(got).all()
    assert (got.diagonal(dim1=1, dim2=2) > 60).all()


def test_pairwise_si_snr_gradcheck():
    gen = torch.Generator().manual_seed(2)
    refs = torch.randn(2, 12, 2, generator=gen, dtype=torch.float64)
    ests = refs.flip(-1) + 0.5 * torch.randn(2, 12, 2, generator=gen, dtype=torch.float64)
    ests.requires_grad_(True)
    refs.requires_grad_(True)
    assert torch.autograd.gradcheck(pairwise_si_snr, (ests, refs))


def test_pairwise_si_snr_gradient_float32():
    ests, refs = realish_batch(3, 2, 0.25, torch.float32)
    ests.requires_grad_(True)
    pairwise_si_snr(ests, refs).mean().backward()
    assert torch.isfinite(ests.grad).all() and ests.grad.abs().sum() > 0


def test_pairwise_si_snr_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, T, E\].*\(2, 100\)"):
        pairwise_si_snr(torch.zeros(2, 100), torch.zeros(2, 100, 2))
    with pytest.raises(ValueError, match=r"references has \[B, T\] = \(2, 99\).*\(2, 100\)"):
        pairwise_si_snr(torch.zeros(2, 100, 3), torch.zeros(2, 99, 2))


# ------------------------------------------------------------------------ sdr


# mir_eval takes ~0.5 s per 3-source utterance of any length here: few cases.
@pytest.mark.parametrize("seed,n_src,seconds", [(0, 2, 0.5), (1, 2, 2.0), (2, 3, 1.0)])
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.slow
def test_sdr_matches_mir_eval(seed, n_src, seconds):
    ests, refs, _ = realish_pair(seed, n_src, seconds)
    got = sdr(ests, refs)
    assert got.shape == (n_src,) and got.dtype == np.float64
    np.testing.assert_allclose(got, mir_eval_sdr(refs, ests), rtol=0, atol=0.01)


@pytest.mark.slow
def test_sdr_is_in_reference_order_whatever_the_estimate_order():
    ests, refs, perm = realish_pair(4, 3, 0.5)
    unshuffled = np.empty_like(ests)
    unshuffled[perm] = ests
    expected = sdr(unshuffled, refs)
    np.testing.assert_allclose(sdr(ests, refs), expected, rtol=0, atol=1e-9)
    for order in itertools.permutations(range(3)):
        np.testing.assert_allclose(sdr(unshuffled[list(order)], refs), expected, atol=1e-9)


def test_sdr_accepts_torch_tensors():
    ests, refs, _ = realish_pair(5, 2, 0.5)
    expected = sdr(ests, refs)
    got = sdr(torch.from_numpy(ests), torch.from_numpy(refs))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    got32 = sdr(torch.from_numpy(ests).float(), torch.from_numpy(refs).float())
    np.testing.assert_allclose(got32, expected, rtol=0, atol=1e-3)


def test_sdr_validation():
    ests, refs, _ = realish_pair(6, 2, 0.25)
    with pytest.raises(ValueError, match=r"estimates has shape \(2, 1999\), expected \(2, 2000\)"):
        sdr(ests[:, :-1], refs)
    with pytest.raises(ValueError, match=r"estimates has shape \(3, 2000\), expected \(2, 2000\)"):
        sdr(np.concatenate([ests, ests[:1]]), refs)
    with pytest.raises(ValueError, match=r"references has shape \(2000,\), expected \[n_src, T\]"):
        sdr(ests[0], refs[0])
    silent = refs.copy()
    silent[1] = 0
    with pytest.raises(ValueError, match=r"references has all-zero source\(s\) at index \[1\]"):
        sdr(ests, silent)
    with pytest.raises(ValueError, match=r"estimates has all-zero source\(s\) at index \[1\]"):
        sdr(silent, refs)
    bad = ests.copy()
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="estimates contains NaN or infinite"):
        sdr(bad, refs)
    with pytest.raises(ValueError, match="references contains NaN or infinite"):
        sdr(ests, np.where(refs > 1, np.inf, refs))
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        sdr(ests.tolist(), refs)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_sdr_falls_back_to_mir_eval(monkeypatch):
    ests, refs, _ = realish_pair(7, 2, 0.5)
    expected = sdr(ests, refs)
    mir_eval_sdr(refs[:, :600], ests[:, :600])  # skips where mir_eval lacks it
    monkeypatch.setitem(sys.modules, "fast_bss_eval", None)  # makes the import fail
    np.testing.assert_allclose(sdr(ests, refs), expected, rtol=0, atol=0.01)


def test_sdr_needs_no_mir_eval(monkeypatch):
    ests, refs, _ = realish_pair(8, 2, 0.25)
    expected = sdr(ests, refs)
    monkeypatch.setitem(sys.modules, "mir_eval", None)
    monkeypatch.setitem(sys.modules, "mir_eval.separation", None)
    np.testing.assert_array_equal(sdr(ests, refs), expected)


def test_sdr_without_any_backend_says_what_to_install(monkeypatch):
    ests, refs, _ = realish_pair(8, 2, 0.25)
    monkeypatch.setitem(sys.modules, "fast_bss_eval", None)
    monkeypatch.setitem(sys.modules, "mir_eval", None)
    monkeypatch.setitem(sys.modules, "mir_eval.separation", None)
    with pytest.raises(ImportError, match="pip install fast-bss-eval"):
        sdr(ests, refs)


def test_sdr_without_fast_bss_eval_on_mir_eval_0_9(monkeypatch):
    separation = pytest.importorskip("mir_eval.separation")
    ests, refs, _ = realish_pair(8, 2, 0.25)
    monkeypatch.setitem(sys.modules, "fast_bss_eval", None)
    if hasattr(separation, "bss_eval_sources"):
        monkeypatch.delattr(separation, "bss_eval_sources")  # as removed in 0.9
    with pytest.raises(ImportError, match="fast-bss-eval"):
        sdr(ests, refs)


# ---------------------------------------------------------- utterance_metrics


def orthogonal_case():
    """Two zero-mean orthogonal speakers of unequal energy, estimates at known
    SI-SNR (10 and 30 dB) in swapped order, and the mixture."""
    rng = np.random.default_rng(9)
    n_samples = 4000
    columns = rng.standard_normal((n_samples, 4))
    # Orthonormalising zero-mean columns keeps them zero-mean (same span); unit
    # variance per sample puts the energies far above eps (1e-8).
    basis = np.linalg.qr(columns - columns.mean(axis=0))[0] * np.sqrt(n_samples)
    s1, s2, e1, e2 = 3.0 * basis[:, 0], 1.5 * basis[:, 1], basis[:, 2], basis[:, 3]
    # SI-SNR = 10 log10(||s||^2 / ||err||^2): errors scaled to 10 and 30 dB.
    est1 = s1 + e1 * np.linalg.norm(s1) / np.linalg.norm(e1) * 10 ** (-10 / 20)
    est2 = s2 + e2 * np.linalg.norm(s2) / np.linalg.norm(e2) * 10 ** (-30 / 20)
    return np.stack([est2, est1], -1), np.stack([s1, s2], -1), s1 + s2


def test_utterance_metrics_hand_checkable():
    ests, refs, mix = orthogonal_case()
    scores = utterance_metrics(ests, refs, mix)
    assert set(scores) == {"si-snr", "si-snr_i", "sdr", "sdr_i"}
    assert all(type(value) is float for value in scores.values())
    assert scores["si-snr"] == pytest.approx((10 + 30) / 2, abs=1e-6)
    # The mixture against s1 has s2 as its error: 10 log10(3^2 / 1.5^2) = +6.02 dB;
    # against s2, -6.02 dB: the baseline mean is 0 dB.
    assert scores["si-snr_i"] == pytest.approx(20.0, abs=1e-6)
    expected_sdr = sdr(ests.T, refs.T).mean()
    assert scores["sdr"] == pytest.approx(expected_sdr, abs=1e-9)
    mix_sdr = sdr(np.stack([mix, mix]), refs.T).mean()
    assert scores["sdr_i"] == pytest.approx(expected_sdr - mix_sdr, abs=1e-9)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.slow
def test_utterance_metrics_matches_recipe_computation():
    """The recipe's own way: PIT of negative cal_si_snr, mir_eval SDR."""
    from speechbrain.nnet.losses import PitWrapper, cal_si_snr

    ests, refs, _ = realish_pair(12, 2, 0.5)
    mix = refs.sum(0) + 0.1 * np.random.default_rng(0).standard_normal(refs.shape[1])
    scores = utterance_metrics(ests.T, refs.T, mix)
    pit = PitWrapper(cal_si_snr)
    targets = torch.from_numpy(refs.T.copy())[None]
    loss, _ = pit(torch.from_numpy(ests.T.copy())[None], targets)
    base, _ = pit(torch.from_numpy(np.stack([mix] * 2, -1))[None], targets)
    assert scores["si-snr"] == pytest.approx(-loss.item(), abs=1e-6)
    assert scores["si-snr_i"] == pytest.approx(-(loss - base).item(), abs=1e-6)
    sdr_ref = mir_eval_sdr(refs, ests)
    sdr_base = mir_eval_sdr(refs, np.stack([mix] * 2))
    assert scores["sdr"] == pytest.approx(sdr_ref.mean(), abs=0.01)
    assert scores["sdr_i"] == pytest.approx(sdr_ref.mean() - sdr_base.mean(), abs=0.01)


def test_utterance_metrics_improvement_signs():
    ests, refs, _ = realish_pair(13, 2, 0.5)
    mix = refs.sum(0)
    good = utterance_metrics(ests.T, refs.T, mix)
    assert good["si-snr_i"] > 0 and good["sdr_i"] > 0
    same = utterance_metrics(np.stack([mix, mix], -1), refs.T, mix)
    assert same["si-snr_i"] == pytest.approx(0, abs=1e-9)
    assert same["sdr_i"] == pytest.approx(0, abs=1e-9)
    noisy = np.stack([mix, mix], -1) + 3 * np.random.default_rng(1).standard_normal((mix.size, 2))
    bad = utterance_metrics(noisy, refs.T, mix)
    assert bad["si-snr_i"] < 0 and bad["sdr_i"] < 0


@pytest.mark.slow
def test_utterance_metrics_permutation_invariant_and_type_agnostic():
    ests, refs, _ = realish_pair(14, 3, 0.5)
    mix = refs.sum(0)
    expected = utterance_metrics(ests.T, refs.T, mix)
    for order in itertools.permutations(range(3)):
        got = utterance_metrics(ests[list(order)].T, refs.T, mix)
        assert got == pytest.approx(expected, abs=1e-9)
    as_torch = utterance_metrics(
        *(torch.from_numpy(array).float() for array in (ests.T, refs.T, mix))
    )
    assert as_torch == pytest.approx(expected, abs=1e-3)


def test_utterance_metrics_validation():
    ests, refs, mix = orthogonal_case()  # [4000, 2]
    cases = [
        ((ests, refs[:, :1], mix), r"references has shape \(4000, 1\), expected \(4000, 2\)"),
        ((ests, refs[:-1], mix), r"references has shape \(3999, 2\), expected \(4000, 2\)"),
        ((ests, refs, mix[:-1]), r"mixture has shape \(3999,\), expected \(4000,\)"),
        ((ests, refs, ests), r"mixture has shape \(4000, 2\), expected \(4000,\)"),
        ((ests[:, 0], refs, mix), r"estimates has shape \(4000,\), expected \[T, C\]"),
        (
            (ests, np.stack([refs[:, 0], 0 * mix], -1), mix),
            r"references has all-zero source\(s\) at index \[1\]",
        ),
        ((ests, refs, 0 * mix), r"mixture has all-zero"),
        ((np.where(ests > 0.05, np.nan, ests), refs, mix), "estimates contains NaN or infinite"),
        ((ests, refs, np.where(mix > 0.05, -np.inf, mix)), "mixture contains NaN or infinite"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            utterance_metrics(*args)
