"""Long recordings in overlapping windows, joined so a speaker stays on one output at one level.

:func:`separate_in_chunks` runs a separator (``[1, T] -> [1, T, S]``) on
windows overlapping by a quarter, cross-fades them (``cos^2``/``sin^2``: the
weights sum to 1), permutes each window's outputs to match the previous one's
over the overlap (as Asteroid's ``LambdaOverlapAdd``; a fixed noise slot
stays) and matches their levels by least squares (a scale-invariant model
leaves them free). Inputs no longer than a window go through unchanged.
:func:`choose_window` caps the window at what the model takes
(:func:`longest_input`: SpeechBrain's positional encoding) and what memory allows.
Windows go through the separator in batches of equal-length windows
(:func:`run_in_batches`), then are matched and cross-faded one after
another (:func:`join_windows`).

Example
-------
A "separator" that splits its input into its positive and its negative part,
in an order that changes from window to window, still yields each part on
one output from start to end:

>>> import torch
>>> calls = []
>>> def swapping_separator(window):
...     calls.append(window.shape[1])
...     parts = torch.stack([window.clamp(min=0), window.clamp(max=0)], dim=-1)
...     return parts.flip(-1) if len(calls) % 2 == 0 else parts
>>> mixture = torch.sin(torch.arange(1000.0) / 7)[None]
>>> est = separate_in_chunks(swapping_separator, mixture, chunk_size=400)
>>> calls                                   # windows of at most 400 samples
[400, 400, 400]
>>> torch.allclose(est[0, :, 0], mixture[0].clamp(min=0), atol=1e-6)
True
"""

import math

import torch
from tqdm import tqdm

from nass.inference.memory import GIB, MemoryBudgetError, largest_batch, plan_window
from nass.metrics import pairwise_si_snr
from nass.losses.pit import align, best_assignment

# Windows of this many seconds unless asked otherwise: the test mixtures of
# LibriMix and WHAM! (almost all shorter) go through in one pass, as the
# recipe's evaluation and the reference take them; about 1 GiB for the release
# Sepformer in fp32 (figures: benchmarks/README.md).
DEFAULT_CHUNK_SECONDS = 30.0
# A quarter of each window is shared with the next: enough signal (7.5 s of a
# 30 s window) to match outputs reliably, while every sample is separated
# only 1 / (1 - 0.25) = 1.33 times on average (2 times at 50 %).
DEFAULT_OVERLAP = 0.25
# An output this many dB below its level over the window is silent there: too
# faint for its level to be matched by.
SILENT_DB = -30.0


def plan_windows(length, chunk_size, overlap=DEFAULT_OVERLAP):
    """``[(start, stop), ...]`` of the windows covering ``length`` samples.

    Windows are ``chunk_size`` long and start every ``hop = chunk_size -
    overlap_size`` samples; the last one ends at ``length`` and is longer
    than the overlap, so it always fades in over a whole overlap.

    >>> plan_windows(1000, 400)
    [(0, 400), (300, 700), (600, 1000)]
    >>> plan_windows(350, 400)
    [(0, 350)]
    """
    overlap_size = _overlap_size(chunk_size, overlap)
    hop = chunk_size - overlap_size
    if length <= chunk_size:
        return [(0, length)]
    n_windows = math.ceil((length - chunk_size) / hop) + 1
    return [(k * hop, min(k * hop + chunk_size, length)) for k in range(n_windows)]


def crossfade_weights(window_length, overlap_size, fade_in, fade_out):
    """``[window_length]`` weights: ``sin^2`` rise and ``cos^2`` fall over ``overlap_size``.

    Where two windows overlap one falls as the other rises, and
    ``cos^2 + sin^2 = 1``, so every sample's weights sum to 1.

    >>> w = crossfade_weights(8, 4, fade_in=False, fade_out=True)
    >>> [round(v, 3) for v in w.tolist()]
    [1.0, 1.0, 1.0, 1.0, 0.962, 0.691, 0.309, 0.038]
    """
    weights = torch.ones(window_length)
    # Half-sample offsets make the rise and the fall exact mirror images.
    phase = (torch.arange(overlap_size, dtype=torch.float64) + 0.5) / overlap_size * (math.pi / 2)
    rise = torch.sin(phase).pow(2).float()
    if fade_in:
        weights[:overlap_size] = rise
    if fade_out:
        weights[window_length - overlap_size:] = rise.flip(0)
    return weights


def separate_in_chunks(separate, mixture, chunk_size, overlap=DEFAULT_OVERLAP,
                       fixed_last=False, progress=False, batch_size=1):
    """Separates ``mixture`` ``[1, T]`` window by window into ``[1, T, S]``.

    Arguments
    ---------
    separate : callable
        ``[B, t] -> [B, t, S]`` for any ``t <= chunk_size`` and ``B <=
        batch_size``, e.g. a :class:`nass.model.separator.NoiseAwareSeparator`
        in eval mode.
    mixture : torch.Tensor
        ``[1, T]``.
    chunk_size : int
        Window length in samples (at the separator's sample rate).
    overlap : float
        Fraction of a window shared with the next, in ``(0, 0.5]``.
    fixed_last : bool
        The last output is a fixed slot (the noise of a model trained with
        ``noise_assignment: fixed``); only the others are matched.
    progress : bool
        Show a progress bar over the batches.
    batch_size : int
        The most windows given to ``separate`` at once (:func:`run_in_batches`).

    Returns
    -------
    torch.Tensor
        ``[1, T, S]`` on the CPU; exactly ``separate(mixture)`` when ``T <= chunk_size``.
    """
    if mixture.dim() != 2 or mixture.shape[0] != 1:
        raise ValueError(f"separate_in_chunks: mixture must be [1, T], got {tuple(mixture.shape)}")
    if mixture.shape[1] <= chunk_size:
        return separate(mixture)
    windows = plan_windows(mixture.shape[1], chunk_size, overlap)
    outputs = run_in_batches(separate, [mixture[0, start:stop] for start, stop in windows],
                             batch_size, progress)
    return join_windows(outputs, mixture[0], chunk_size, overlap, fixed_last)[None]


def run_in_batches(separate, windows, batch_size, progress=False):
    """``[t_k, S]`` outputs of ``separate`` for each of ``windows`` (``[t_k]`` each), in their order.

    Windows of equal length go through ``separate`` (``[B, t] -> [B, t, S]``)
    together, at most ``batch_size`` at a time, in order of first
    appearance; windows of different lengths never share a batch, since
    padding would change what a model that normalises over its whole input
    returns.
    """
    by_length = {}
    for index, window in enumerate(windows):
        by_length.setdefault(window.shape[-1], []).append(index)
    batches = [indices[first:first + batch_size] for indices in by_length.values()
               for first in range(0, len(indices), batch_size)]
    outputs = [None] * len(windows)
    for batch in tqdm(batches, disable=not progress, leave=False, unit="batch", desc="windows"):
        estimates = separate(torch.stack([windows[index] for index in batch])).detach().cpu()
        for index, estimate in zip(batch, estimates):
            outputs[index] = estimate
    return outputs


def join_windows(outputs, mixture, chunk_size, overlap=DEFAULT_OVERLAP, fixed_last=False):
    """``[T, S]``: the outputs ``[t_k, S]`` of the windows of :func:`plan_windows` on ``mixture`` ``[T]``, joined.

    Each window's outputs are matched in order and level to the previous
    window's (the module docstring says how), then cross-faded in; this
    runs window after window, on the CPU, and is cheap next to the model.
    """
    windows = plan_windows(mixture.shape[-1], chunk_size, overlap)
    if len(outputs) != len(windows):
        raise ValueError(f"join_windows: {len(outputs)} outputs for {len(windows)} windows")
    if len(windows) == 1:
        return outputs[0]
    overlap_size = _overlap_size(chunk_size, overlap)
    output = previous_tail = None
    for index, ((start, stop), est) in enumerate(zip(windows, outputs)):
        est = est[None]
        window_mixture = mixture[None, start:stop].to(est.dtype)
        if output is None:
            output = torch.zeros(1, mixture.shape[-1], est.shape[-1], dtype=est.dtype)
            est = est * _fit_to_mixture(est, window_mixture, torch.ones(est.shape[-1], dtype=torch.bool),
                                        torch.ones(est.shape[-1], dtype=torch.float64))
        else:
            est = _match_previous(est, previous_tail, overlap_size, fixed_last)
            est = _match_level(est, previous_tail, overlap_size, window_mixture)
        weights = crossfade_weights(stop - start, overlap_size, fade_in=index > 0,
                                    fade_out=index < len(windows) - 1)
        output[:, start:stop] += est * weights[None, :, None].to(est.dtype)
        previous_tail = est[:, -overlap_size:]
    return output[0]


def longest_input(model):
    """The most samples ``model`` can separate in one pass, or None when it sets no bound.

    A SpeechBrain ``Dual_Path_Model`` mask net (Sepformer, DPRNN) splits the
    encoder's ``L`` frames into ``S = 2 * (floor((L + K // 2) / K) + 1)``
    half-overlapping chunks of ``K`` frames. Its transformer blocks add a
    positional encoding of ``max_len`` positions (2500 in SpeechBrain) to the
    sequence of chunks, and, with ``use_global_pos_enc``, to the ``L`` frames,
    so ``S`` and ``L`` may not exceed it. A model without ``encoder`` and
    ``masknet``, or whose mask net has no positional encoding (DPRNN), sets no
    bound.

    >>> from speechbrain.lobes.models.dual_path import (
    ...     Decoder, Dual_Path_Model, Encoder, SBTransformerBlock)
    >>> from nass.model import NoiseAwareSeparator, Outputs
    >>> block = lambda: SBTransformerBlock(num_layers=1, d_model=16, nhead=2, d_ffn=16,
    ...                                    use_positional_encoding=True)
    >>> sepformer = NoiseAwareSeparator(
    ...     Encoder(kernel_size=16, out_channels=16),
    ...     Dual_Path_Model(16, 16, block(), block(), num_layers=1, K=250, num_spks=3),
    ...     Decoder(in_channels=16, out_channels=1, kernel_size=16, stride=8, bias=False),
    ...     Outputs(num_spks=2))
    >>> longest_input(sepformer) / 8000       # seconds at 8 kHz
    312.375875
    """
    max_len = max_positions(model)
    if max_len is None or not hasattr(getattr(model, "encoder", None), "conv1d"):
        return None
    encoder, masknet = model.encoder, model.masknet
    chunk = masknet.K
    # S <= max_len  <=>  floor((L + K // 2) / K) <= max_len // 2 - 1
    frames = chunk * (max_len // 2) - 1 - chunk // 2
    if getattr(masknet, "use_global_pos_enc", False):
        frames = min(frames, max_len)
    conv = encoder.conv1d
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    # L = floor((T - kernel) / stride) + 1
    return (frames - 1) * stride + kernel + stride - 1


def max_positions(model):
    """The fewest positions of the positional encodings in ``model.masknet`` (None if none).

    Only a ``Dual_Path_Model``-like mask net (one with chunks of ``K``
    frames) counts; SpeechBrain's ``PositionalEncoding`` keeps its table as
    the buffer ``pe`` ``[1, max_len, d]``.
    """
    masknet = getattr(model, "masknet", None)
    if masknet is None or not hasattr(masknet, "K"):
        return None
    return min((m.pe.shape[1] for m in masknet.modules()
                if isinstance(getattr(m, "pe", None), torch.Tensor)), default=None)


def _overlap_size(chunk_size, overlap):
    if not 0 < overlap <= 0.5:
        raise ValueError(f"overlap must be in (0, 0.5], got {overlap}")
    overlap_size = round(chunk_size * overlap)
    if overlap_size < 1:
        raise ValueError(f"chunk_size {chunk_size} is too small for an overlap of {overlap}")
    return overlap_size


def _match_previous(est, previous_tail, overlap_size, fixed_last):
    """``est`` ``[1, t, S]`` permuted so its head matches ``previous_tail`` best."""
    head = est[:, :overlap_size].double()
    # [1, this window's outputs, previous window's outputs]; least loss = most alike.
    loss = -pairwise_si_snr(head, previous_tail.double())
    assignment, _ = best_assignment(loss, fixed_last=fixed_last)
    return align(est, assignment)


def _match_level(est, previous_tail, overlap_size, window_mixture):
    """``est`` ``[1, t, S]`` with each output scaled so its head best fits ``previous_tail``.

    The least-squares gain ``<tail, head> / <head, head>`` of each output;
    outputs that are silent over the overlap (:data:`SILENT_DB` below their
    level over the window, in this window or the previous one's tail) get the
    gains that best complete ``window_mixture`` given the others.
    """
    head = est[0, :overlap_size].double()
    tail = previous_tail[0].double()
    head_power = head.pow(2).mean(dim=0)
    tail_power = tail.pow(2).mean(dim=0)
    window_power = est[0].double().pow(2).mean(dim=0)
    silent_level = 10 ** (SILENT_DB / 10)
    matched = ((head_power > silent_level * window_power)
               & (tail_power > silent_level * window_power) & (head_power > 0))
    gain = torch.where(matched, (head * tail).mean(dim=0) / head_power.clamp(min=1e-300),
                       torch.ones_like(head_power))
    if not matched.all():
        gain = _fit_to_mixture(est, window_mixture, ~matched, gain)
    return est * gain.to(est.dtype)


def _fit_to_mixture(est, window_mixture, free, gain):
    """``gain`` ``[S]`` with its ``free`` entries set so ``sum_k gain_k est_k`` best fits the mixture.

    Outputs that are silent over the whole window keep their gain; if the
    least-squares gains are not all finite and non-zero (outputs too alike to
    tell apart), ``gain`` is returned unchanged.
    """
    outputs = est[0].double()
    free = free & (outputs.pow(2).sum(dim=0) > 0)
    if not free.any():
        return gain.to(est.dtype)
    residual = window_mixture[0].double() - outputs[:, ~free] @ gain[~free].double()
    solution = torch.linalg.lstsq(outputs[:, free], residual[:, None]).solution[:, 0]
    if not (torch.isfinite(solution).all() and (solution != 0).all()):
        return gain.to(est.dtype)
    gain = gain.clone().double()
    gain[free] = solution
    return gain.to(est.dtype)

def choose_window(model, sample_rate, chunk_seconds=None, max_memory=None):
    """``(samples or None, note or None)``: the window :class:`nass.inference.Separator` uses.

    ``chunk_seconds`` is what the caller asked for (None: the default
    :data:`DEFAULT_CHUNK_SECONDS`; ``math.inf``: one pass). The window is
    capped at :func:`longest_input` and at the longest whose memory fits
    ``max_memory`` GiB (None: not capped for memory;
    :func:`nass.inference.memory.plan_window`). ``note`` says why a window
    is shorter than asked (or than the default, for memory); None when it
    is not, or when only the model's own bound shortened the default.

    Raises ValueError for a window too short for the overlap and the
    encoder, and :class:`nass.inference.memory.MemoryBudgetError` when not
    even the shortest window fits ``max_memory``.
    """
    asked = chunk_seconds is not None
    seconds = DEFAULT_CHUNK_SECONDS if chunk_seconds is None else float(chunk_seconds)
    if not seconds > 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    kernel = model.kernel_size
    size = None if math.isinf(seconds) else round(seconds * sample_rate)
    # Every window, the last included, is longer than the overlap, and at least one kernel.
    shortest = math.ceil(kernel / DEFAULT_OVERLAP)
    if size is not None and round(size * DEFAULT_OVERLAP) < kernel:
        raise ValueError(f"chunk_seconds must be at least {shortest / sample_rate:.4f} s, "
                         f"got {chunk_seconds}")
    note = None
    longest = longest_input(model)
    if longest is not None and (size is None or size > longest):
        size = longest
        if asked:
            note = (f"windows capped at {longest / sample_rate:.2f} s instead of {seconds:g} s: "
                    f"the model cannot separate more in one pass (its positional encoding covers "
                    f"at most {max_positions(model)} chunks of {model.masknet.K} frames)")
    if max_memory is None:
        return size, note
    fits, size_bytes, shortest_bytes = plan_window(model, max_memory * GIB, shortest, asked=size)
    if fits is None:
        raise MemoryBudgetError(
            f"max_memory (--max-memory) of {max_memory:.3g} GiB is too little for this model: "
            f"its weights and the shortest window ({shortest / sample_rate:.4f} s) need about "
            f"{shortest_bytes / GIB:.3g} GiB")
    if size is None or fits < size:
        wanted = ("longer windows" if size is None else
                  f"a {size / sample_rate:g} s window, about {size_bytes / GIB:.3g} GiB,")
        asked_for = f"{seconds:g} s" if asked else f"the default {seconds:g} s"
        note = (f"windows capped at {fits / sample_rate:.2f} s instead of {asked_for}: {wanted} "
                f"would not fit in the {max_memory:.3g} GiB allowed for the model and one window "
                f"(--max-memory; default 80 % of the memory available)")
        size = fits
    return size, note


def choose_batch(model, window, max_memory, most):
    """``(windows, note or None)``: how many windows of ``window`` samples to separate at once.

    The most, up to ``most``, whose memory fits ``max_memory`` GiB together
    (None: not capped; :func:`nass.inference.memory.largest_batch`), at
    least 1. ``window`` None (one pass over whole inputs) is sized as the
    longest input the model takes, or not batched if it sets no bound.
    ``note`` says when memory held the batch below ``most``.
    """
    if not (isinstance(most, int) and not isinstance(most, bool) and most >= 1):
        raise ValueError(f"batch_size must be a whole number of windows >= 1, got {most!r}")
    if most == 1 or max_memory is None:
        return most, None
    window = window if window is not None else longest_input(model)
    if window is None:
        return 1, None
    fits = largest_batch(model, max_memory * GIB, window, most)
    if fits == most:
        return most, None
    return fits, (f"{fits} window(s) at a time instead of {most}: more would not fit in the "
                  f"{max_memory:.3g} GiB allowed (--max-memory)")
