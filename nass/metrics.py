"""Separation metrics per utterance: SI-SNR, BSS-Eval SDR and their improvements.

:func:`si_snr` is SpeechBrain's SI-SNR on ``[..., T]``; :func:`pairwise_si_snr`
every estimate against every reference (``[B, T, C]`` in, ``[B, E, R]`` out,
from inner products: what PIT uses); :func:`sdr` BSS-Eval v3 SDR, equal to
``mir_eval``'s ``bss_eval_sources``; :func:`utterance_metrics` the four numbers
the recipes write per test utterance. About 440 lines: SDR's distortion-filter
solve and the mixture baselines need their edge cases (silent or short references).

Example
-------
>>> import torch
>>> t = torch.arange(8000, dtype=torch.float64)
>>> refs = torch.stack([torch.sin(0.05 * t), torch.sin(0.13 * t)], dim=-1)  # [T, C]
>>> ests = refs.flip(-1) + 0.01 * torch.cos(0.31 * t)[:, None]             # swapped order
>>> scores = utterance_metrics(ests, refs, mixture=refs.sum(-1))
>>> sorted(scores)
['sdr', 'sdr_i', 'si-snr', 'si-snr_i']
>>> scores["si-snr"] > 30 and scores["si-snr_i"] > 30
True
"""

import itertools
import warnings

import numpy as np
import torch

# SpeechBrain's ``cal_si_snr`` constant; keeping it keeps the numbers equal.
SI_SNR_EPS = 1e-8
# BSS-Eval v3's distortion filter, as in ``mir_eval.separation.bss_eval_sources``.
SDR_FILTER_LENGTH = 512


def si_snr(estimate, reference, eps=SI_SNR_EPS):
    """Scale-invariant signal-to-noise ratio, in dB, with SpeechBrain's semantics.

    Both signals are made zero-mean over time, then
    ``proj = <est, ref> ref / (||ref||^2 + eps)`` and
    ``SI-SNR = 10 log10(||proj||^2 / (||est - proj||^2 + eps) + eps)``,
    which is ``-speechbrain.nnet.losses.cal_si_snr`` (that one takes ``[T, B, C]``).

    Arguments
    ---------
    estimate : torch.Tensor
        ``[..., T]`` estimated signals.
    reference : torch.Tensor
        ``[..., T]`` reference signals, same shape.
    eps : float
        Regulariser of the energies and of the ratio.

    Returns
    -------
    torch.Tensor
        ``[...]`` SI-SNR in dB (differentiable).

    Example
    -------
    >>> ref = torch.tensor([1.0, -1.0, 1.0, -1.0])
    >>> err = torch.tensor([0.1, 0.1, -0.1, -0.1])   # zero-mean, orthogonal to ref
    >>> round(si_snr(ref + err, ref).item(), 3)
    20.0
    """
    if estimate.shape != reference.shape:
        raise ValueError(
            f"si_snr: estimate has shape {tuple(estimate.shape)}, expected the "
            f"shape of reference {tuple(reference.shape)}"
        )
    est = estimate - estimate.mean(dim=-1, keepdim=True)
    ref = reference - reference.mean(dim=-1, keepdim=True)
    dot = (est * ref).sum(dim=-1, keepdim=True)
    proj = dot * ref / (ref.pow(2).sum(dim=-1, keepdim=True) + eps)
    noise = est - proj
    ratio = proj.pow(2).sum(dim=-1) / (noise.pow(2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio + eps)


def pairwise_si_snr(estimates, references, eps=SI_SNR_EPS, lengths=None):
    """SI-SNR of every estimate against every reference, for PIT.

    Equal to ``si_snr(estimates[b, :, e], references[b, :, r])`` for all
    ``e, r``, but computed from the inner products ``<e, r>``, ``||e||^2`` and
    ``||r||^2`` of the zero-mean signals, so it costs one ``[E, T] x [T, R]``
    product per utterance instead of ``E * R`` copies of the signals:
    with ``a = <e, r> / (||r||^2 + eps)``, ``||proj||^2 = a^2 ||r||^2`` and
    ``||e - proj||^2 = ||e||^2 - 2 a <e, r> + a^2 ||r||^2``.

    Arguments
    ---------
    estimates : torch.Tensor
        ``[B, T, E]`` estimated signals (SpeechBrain's layout).
    references : torch.Tensor
        ``[B, T, R]`` reference signals.
    eps : float
        As in :func:`si_snr`.
    lengths : torch.Tensor, optional
        Valid samples per utterance ``[B]``: padding beyond is left out.

    Returns
    -------
    torch.Tensor
        ``[B, E, R]`` SI-SNR in dB of estimate ``e`` against reference ``r``
        (differentiable), in at least float32 (half-precision energies overflow).

    Example
    -------
    >>> refs = torch.randn(2, 1000, 3, dtype=torch.float64)
    >>> ests = refs[..., [2, 0, 1]] + 0.1 * torch.randn(2, 1000, 3, dtype=torch.float64)
    >>> pairwise_si_snr(ests, refs).argmax(dim=-1).tolist()   # best reference per estimate
    [[2, 0, 1], [2, 0, 1]]
    """
    if estimates.dim() != 3 or references.dim() != 3:
        raise ValueError(
            f"pairwise_si_snr: estimates and references must be [B, T, E] and "
            f"[B, T, R], got {tuple(estimates.shape)} and {tuple(references.shape)}"
        )
    if estimates.shape[:2] != references.shape[:2]:
        raise ValueError(
            f"pairwise_si_snr: references has [B, T] = {tuple(references.shape[:2])}, "
            f"expected {tuple(estimates.shape[:2])} as in estimates"
        )
    if estimates.dtype in (torch.float16, torch.bfloat16):
        estimates, references = estimates.float(), references.float()
    if lengths is not None and bool((lengths < estimates.shape[1]).any()):
        return torch.cat([pairwise_si_snr(estimates[b: b + 1, :n], references[b: b + 1, :n], eps)
                          for b, n in enumerate(lengths.tolist())])
    est = estimates - estimates.mean(dim=1, keepdim=True)
    ref = references - references.mean(dim=1, keepdim=True)
    dot = est.transpose(1, 2) @ ref  # [B, E, R]
    ref_energy = ref.pow(2).sum(dim=1).unsqueeze(1)  # [B, 1, R]
    est_energy = est.pow(2).sum(dim=1).unsqueeze(2)  # [B, E, 1]
    scale = dot / (ref_energy + eps)
    proj_energy = scale.pow(2) * ref_energy
    # The expansion cancels when the estimate is nearly a scaled reference;
    # rounding may then leave a tiny negative energy, which is really zero.
    noise_energy = (est_energy - 2 * scale * dot + proj_energy).clamp_min(0)
    return 10 * torch.log10(proj_energy / (noise_energy + eps) + eps)


def sdr(estimates, references):
    """BSS-Eval v3 SDR per reference, after the best permutation of the estimates.

    Same numbers as ``mir_eval.separation.bss_eval_sources(references,
    estimates)[0]``: 512-tap time-invariant distortion filter, the estimates
    permuted to maximise the mean SIR, exact (direct) solves, no clamping.
    Computed with ``fast_bss_eval`` in float64 (several times faster), or
    with ``mir_eval`` when ``fast_bss_eval`` is not installed.

    Arguments
    ---------
    estimates : numpy.ndarray or torch.Tensor
        ``[n_src, T]`` estimated sources, in any order.
    references : numpy.ndarray or torch.Tensor
        ``[n_src, T]`` reference sources, none of them all-zero.

    Returns
    -------
    numpy.ndarray
        ``[n_src]`` float64 SDR in dB; entry ``j`` belongs to ``references[j]``.

    Raises
    ------
    ValueError
        On shapes that differ or are not 2-D, non-finite values, or an all-zero
        source (its SDR is undefined).
    ImportError
        If neither ``fast_bss_eval`` nor ``mir_eval`` (< 0.9) is installed.

    Example
    -------
    >>> t = np.arange(4000)
    >>> refs = np.stack([np.sin(0.05 * t), np.sign(np.sin(0.011 * t))])
    >>> ests = refs[::-1] + 0.01 * np.cos(0.7 * t)        # swapped order
    >>> scores = sdr(ests, refs)
    >>> scores.shape, bool((scores > 30).all())
    ((2,), True)
    """
    est = _to_float64_numpy(estimates, "estimates", "sdr")
    ref = _to_float64_numpy(references, "references", "sdr")
    if ref.ndim != 2 or ref.shape[1] == 0:
        raise ValueError(
            f"sdr: references has shape {ref.shape}, expected [n_src, T] with T > 0"
        )
    if est.shape != ref.shape:
        raise ValueError(
            f"sdr: estimates has shape {est.shape}, expected {ref.shape} "
            f"([n_src, T] as in references)"
        )
    for array, name in ((est, "estimates"), (ref, "references")):
        _check_finite(array, name, "sdr")
        _check_not_silent(array, name, "sdr")
    return np.asarray(_bss_eval_sources_sdr()(ref, est), dtype=np.float64)


def utterance_metrics(estimates, references, mixture):
    """The per-utterance scores of the SpeechBrain separation recipes.

    Mirrors the recipes' ``save_results``: SI-SNR with PIT over the C speakers
    (the permutation of largest mean SI-SNR), the baseline being the mixture
    as the estimate of every speaker; SDR from :func:`sdr` (its own
    permutation), the baseline being the mixture repeated C times. SI-SNR is
    computed in float64 whatever the input dtype.

    Arguments
    ---------
    estimates : numpy.ndarray or torch.Tensor
        ``[T, C]`` the C speaker estimates (extra outputs such as the noise
        estimate already dropped), in any order.
    references : numpy.ndarray or torch.Tensor
        ``[T, C]`` the clean speakers.
    mixture : numpy.ndarray or torch.Tensor
        ``[T]`` the input mixture.

    Returns
    -------
    dict
        Python floats in dB: ``"si-snr"`` (mean over speakers, best
        permutation), ``"si-snr_i"`` (that minus the mixture's mean SI-SNR),
        ``"sdr"`` (mean over speakers) and ``"sdr_i"`` (that minus the
        mixture's mean SDR).

    Raises
    ------
    ValueError
        On mismatched shapes, non-finite values, or an all-zero reference,
        estimate or mixture.

    Example
    -------
    Whole periods of sines at distinct frequencies are zero-mean and
    orthogonal: each estimate's error has 1/100 of its speaker's energy
    (20 dB) and the mixture has 0 dB SI-SNR against either speaker.

    >>> t = np.arange(8000)
    >>> s1, s2, err = (np.sin(2 * np.pi * f * t) for f in (0.01, 0.02, 0.001))
    >>> ests = np.stack([s2 + 0.1 * err, s1 - 0.1 * err], axis=-1)   # swapped order
    >>> scores = utterance_metrics(ests, np.stack([s1, s2], axis=-1), mixture=s1 + s2)
    >>> round(scores["si-snr"], 4), round(scores["si-snr_i"], 4)
    (20.0, 20.0)
    >>> scores["sdr_i"] > 15
    True
    """
    name = "utterance_metrics"
    est, ref, mix = _utterance_arrays(estimates, references, mixture, name)
    for array, arg in ((est.T, "estimates"), (ref.T, "references"), (mix[None], "mixture")):
        _check_finite(array, arg, name)
        _check_not_silent(array, arg, name)
    return {**_si_snr_scores(est, ref, mix), **_sdr_scores(est, ref, mix)}


def utterance_scores(estimates, references, mixture):
    """:func:`utterance_metrics` for any test utterance: what is undefined is NaN, and why.

    An evaluation must not stop at one odd utterance, nor drop it silently:

    * a silent or non-finite reference or mixture, or non-finite estimates:
      every score is NaN (nothing is measured against nothing);
    * fewer samples than BSS-Eval's 512-tap distortion filter, or a silent
      estimate: SDR and SDRi are NaN (BSS-Eval is undefined there); SI-SNR
      is still computed (a silent estimate scores SpeechBrain's floor, about
      -80 dB, and so counts against the model).

    Returns
    -------
    (dict, list of str)
        The four scores (float, NaN where undefined) and the reasons for
        each NaN (empty when all four are defined).

    Example
    -------
    >>> t = np.arange(300)
    >>> s1, s2 = np.sin(0.1 * t), np.sin(0.23 * t)
    >>> refs = np.stack([s1, s2], axis=-1)
    >>> scores, why = utterance_scores(refs + 0.01, refs, s1 + s2)
    >>> round(scores["si-snr"]) > 30, bool(np.isnan(scores["sdr"])), why
    (True, True, ['300 samples, fewer than the 512 BSS-Eval needs: no SDR'])
    >>> scores, why = utterance_scores(refs, np.stack([s1, 0 * s2], axis=-1), s1)
    >>> all(np.isnan(v) for v in scores.values()), why
    (True, ['reference(s) [1] all zero: no score'])
    """
    est, ref, mix = _utterance_arrays(estimates, references, mixture, "utterance_scores")
    scores = dict.fromkeys(("si-snr", "si-snr_i", "sdr", "sdr_i"), float("nan"))
    for array, arg in ((ref.T, "reference(s)"), (mix[None], "mixture"), (est.T, "estimate(s)")):
        if not np.isfinite(array).all():
            return scores, [f"{arg} not finite: no score"]
    for array, arg in ((ref.T, "reference(s)"), (mix[None], "mixture")):
        silent = np.flatnonzero(~array.any(axis=-1))
        if silent.size:
            which = f" {silent.tolist()}" if arg != "mixture" else ""
            return scores, [f"{arg}{which} all zero: no score"]
    scores.update(_si_snr_scores(est, ref, mix))
    silent = np.flatnonzero(~est.T.any(axis=-1))
    if est.shape[0] < SDR_FILTER_LENGTH:
        return scores, [f"{est.shape[0]} samples, fewer than the {SDR_FILTER_LENGTH} "
                        f"BSS-Eval needs: no SDR"]
    if silent.size:
        return scores, [f"estimate(s) {silent.tolist()} all zero: no SDR"]
    scores.update(_sdr_scores(est, ref, mix))
    return scores, []


def mean_of_defined(rows, keys):
    """Per key, the mean over the rows where it is not NaN, and the ``snt_id`` of the others.

    Returns
    -------
    (dict, dict)
        ``{key: mean}`` (NaN when no row has it) and ``{key: [snt_id, ...]}``
        of the rows left out, for the keys that left any out.

    >>> mean_of_defined([{"snt_id": "a", "sdr": 4.0}, {"snt_id": "b", "sdr": float("nan")},
    ...                  {"snt_id": "c", "sdr": 6.0}], ["sdr"])
    ({'sdr': 5.0}, {'sdr': ['b']})
    """
    means, left_out = {}, {}
    for key in keys:
        values = [float(row[key]) for row in rows]
        defined = [v for v in values if not np.isnan(v)]
        means[key] = float(np.mean(defined)) if defined else float("nan")
        missing = [str(row["snt_id"]) for row, v in zip(rows, values) if np.isnan(v)]
        if missing:
            left_out[key] = missing
    return means, left_out


def _utterance_arrays(estimates, references, mixture, name):
    """``(est [T, C], ref [T, C], mix [T])`` float64 arrays, their shapes checked."""
    est = _to_float64_numpy(estimates, "estimates", name)
    ref = _to_float64_numpy(references, "references", name)
    mix = _to_float64_numpy(mixture, "mixture", name)
    if est.ndim != 2 or est.shape[0] == 0 or est.shape[1] == 0:
        raise ValueError(
            f"{name}: estimates has shape {est.shape}, expected [T, C] with T, C > 0"
        )
    if ref.shape != est.shape:
        raise ValueError(
            f"{name}: references has shape {ref.shape}, expected {est.shape} "
            f"([T, C] as in estimates)"
        )
    if mix.shape != est.shape[:1]:
        raise ValueError(
            f"{name}: mixture has shape {mix.shape}, expected {est.shape[:1]} "
            f"([T] as in estimates)"
        )
    return est, ref, mix


def _si_snr_scores(est, ref, mix):
    """``si-snr`` (best permutation) and ``si-snr_i`` of ``[T, C]`` arrays."""
    est_t, ref_t = torch.from_numpy(est.T.copy()), torch.from_numpy(ref.T.copy())
    pairs = pairwise_si_snr(est_t.T[None], ref_t.T[None])[0]  # [C estimates, C refs]
    n_spk = ref.shape[1]
    best_si_snr = max(
        pairs[list(perm), range(n_spk)].mean().item()
        for perm in itertools.permutations(range(n_spk))
    )
    # Every permutation of identical estimates is the same: no PIT needed.
    mix_copies = np.ascontiguousarray(np.broadcast_to(mix, ref.T.shape))
    mix_si_snr = si_snr(torch.from_numpy(mix_copies), ref_t)
    return {"si-snr": best_si_snr, "si-snr_i": best_si_snr - mix_si_snr.mean().item()}


def _sdr_scores(est, ref, mix):
    """``sdr`` and ``sdr_i`` of ``[T, C]`` arrays (BSS-Eval's own permutation)."""
    mean_sdr = float(sdr(est.T, ref.T).mean())
    mix_sdr = float(sdr(np.broadcast_to(mix, ref.T.shape), ref.T).mean())
    return {"sdr": mean_sdr, "sdr_i": mean_sdr - mix_sdr}


def _to_float64_numpy(x, arg, caller):
    """``x`` (numpy or torch, any float/int dtype) as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, np.ndarray):
        # torch.from_numpy rejects negative strides, e.g. of a reversed view.
        return np.ascontiguousarray(x, dtype=np.float64)
    raise TypeError(
        f"{caller}: {arg} must be a numpy array or torch tensor, got {type(x).__name__}"
    )


def _check_finite(array, arg, caller):
    if not np.isfinite(array).all():
        raise ValueError(f"{caller}: {arg} contains NaN or infinite values")


def _check_not_silent(sources, arg, caller):
    """Rejects all-zero rows of ``[n_src, T]``: BSS-Eval SDR is undefined for them."""
    silent = np.flatnonzero(~sources.any(axis=-1))
    if silent.size:
        raise ValueError(
            f"{caller}: {arg} has all-zero source(s) at index {silent.tolist()}; "
            f"SDR is undefined for a silent source"
        )


def _bss_eval_sources_sdr():
    """``f(ref, est) -> sdr`` from the fastest installed BSS-Eval implementation."""
    try:
        import fast_bss_eval
    except ImportError:
        pass
    else:

        def fast(ref, est):
            # A source exactly inside the references' span has no artefact
            # (SAR = +inf, unused here): mir_eval returns inf silently too.
            with np.errstate(divide="ignore"):
                return fast_bss_eval.bss_eval_sources(
                    ref,
                    est,
                    filter_length=SDR_FILTER_LENGTH,
                    use_cg_iter=None,  # exact solve; the iterative one drifts from mir_eval
                    zero_mean=False,
                    clamp_db=None,
                    compute_permutation=True,
                    load_diag=None,
                )[0]

        return fast
    try:
        from mir_eval.separation import bss_eval_sources
    except ImportError:
        raise ImportError(
            "nass.metrics.sdr needs fast_bss_eval (pip install fast-bss-eval), "
            "or mir_eval < 0.9 (pip install 'mir_eval<0.9') as a slower fallback"
        ) from None

    def slow(ref, est):
        # mir_eval 0.8 warns that bss_eval_sources is deprecated on every call.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return bss_eval_sources(ref, est, compute_permutation=True)[0]

    return slow
