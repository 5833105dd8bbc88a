"""Which precision runs where, and the mask network in bf16 or fp16 for separation.

:func:`precision_dtype` is the one rule for which precision a device may run,
for separation and for the recipes' training alike; :func:`set_tf32` the one
rule for TF32 on CUDA: on only for ``tf32`` (fp32 weights, TF32 matrix
products and convolutions), off for every other precision, so ``fp32`` is
IEEE fp32 even though ``import speechbrain`` turns TF32 on. :func:`set_precision`
casts a loaded :class:`nass.model.NoiseAwareSeparator`'s weights once (not per
operation, as ``torch.autocast`` does, whose casts cost more than they save on
a CPU): the mask network's dual-path blocks (almost all of the work) run in
half precision; every normalisation, the mask head after the blocks, the
encoder and decoder stay fp32, so sums over hundreds of values and the masks
themselves are not rounded to 8 bits of mantissa. fp16 has the smaller range:
an input on which it overflows is an error (:func:`check_finite`), not silent
NaNs. Which is faster on which hardware: ``benchmarks/README.md``.

Example
-------
>>> import torch
>>> from nass.model.loading import load_model, recipe_hparams
>>> from nass.metrics import si_snr
>>> hparams = recipe_hparams()
>>> tiny = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1, "inter_layers": 1,
...         "nhead": 2, "d_ffn": 32, "chunk_size": 20}
>>> model = load_model(hparams, tiny)
>>> mix = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
>>> exact = model.eval()(mix)
>>> fast = set_precision(model, "bf16")
>>> fast.masknet.dual_mdl[0].intra_mdl.mdl.layers[0].pos_ffn.ffn[0].weight.dtype
torch.bfloat16
>>> fast(mix).dtype, bool(si_snr(fast(mix)[0].T, exact[0].T).min() > 30)
(torch.float32, True)
"""

import warnings

import torch
from speechbrain.lobes.models.dual_path import GlobalLayerNorm
from torch import nn

PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
              "fp16": torch.float16}
# Normalisation layers, run in fp32 (CumulativeLayerNorm is an nn.LayerNorm).
NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, GlobalLayerNorm)
# Dual_Path_Model's layers after the dual-path blocks, run in fp32.
MASK_HEAD = ("conv2d", "output", "output_gate", "end_conv1x1")


class PrecisionError(ValueError):
    """A precision that is unknown, or that the device cannot run."""


class SlowPrecisionWarning(UserWarning):
    """A precision the device runs, but far slower than fp32."""


def precision_dtype(precision, device=None, training=False):
    """The dtype of ``precision`` (fp32, tf32, bf16, fp16), usable on ``device`` if given; else :class:`PrecisionError`.

    tf32 needs CUDA (a CPU has no TF32: refused rather than run as fp32
    unasked). fp16 needs CUDA, or for separation a CPU with native fp16
    matrix products (:func:`cpu_has_fp16_matmul`); training in fp16 needs
    CUDA (its gradient scaler is CUDA's).
    bf16 on a CPU without bf16 matrix kernels (:func:`cpu_has_bf16_matmul`)
    runs, but many times slower than fp32 (a release-size ``--compare`` did
    not finish in 25 minutes on an AMD EPYC without AVX-512): it gets one
    :class:`SlowPrecisionWarning` line naming fp32.

    >>> precision_dtype("bf16")
    torch.bfloat16
    >>> precision_dtype("fp16", "cuda")
    torch.float16
    >>> precision_dtype("fp16", "cpu", training=True)
    Traceback (most recent call last):
    ...
    nass.model.precision.PrecisionError: precision fp16 needs a CUDA device for training (device is cpu); use bf16 or fp32
    >>> precision_dtype("fp8")
    Traceback (most recent call last):
    ...
    nass.model.precision.PrecisionError: precision must be one of fp32, tf32, bf16, fp16, got 'fp8'
    >>> precision_dtype("tf32", "cpu")
    Traceback (most recent call last):
    ...
    nass.model.precision.PrecisionError: precision tf32 needs a CUDA device (device is cpu); use fp32
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and device is not None and torch.device(device).type != "cuda":
        raise PrecisionError(f"precision tf32 needs a CUDA device (device is {device}); use fp32")
    if precision == "fp16" and device is not None:
        kind = torch.device(device).type
        if training and kind != "cuda":
            raise PrecisionError(f"precision fp16 needs a CUDA device for training (device is "
                                 f"{device}); use bf16 or fp32")
        if kind not in ("cuda", "cpu") or (kind == "cpu" and not cpu_has_fp16_matmul()):
            raise PrecisionError(
                f"precision fp16 needs a CUDA device or a CPU with native fp16 matrix products "
                f"(AVX512-FP16 or AMX-FP16), and device {device} has none; use bf16 or fp32"
            )
    if precision == "bf16" and device is not None and torch.device(device).type == "cpu" \
            and not cpu_has_bf16_matmul():
        warnings.warn(SlowPrecisionWarning(
            "precision bf16: this CPU has no bf16 matrix kernels (AVX-512 or AMX), so bf16 runs "
            "many times slower than fp32 here; use fp32"))
    return PRECISIONS[precision]


def set_tf32(precision, device):
    """Turns TF32 on for ``tf32`` and off for every other precision, when ``device`` is CUDA.

    Process-wide flags (PyTorch has no other): the Separator and the recipe
    call this when they start. SpeechBrain turns them on at import (its
    ``allow_tf32`` quirk), which would make ``fp32`` TF32 unasked. Nothing
    changes for other devices, which TF32 does not concern.
    """
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


def speechbrain_precision(precision):
    """SpeechBrain's run option for ``precision``: tf32 runs as SpeechBrain's fp32, TF32 set by :func:`set_tf32`."""
    return "fp32" if precision == "tf32" else precision


def cpu_has_bf16_matmul():
    """Whether oneDNN has bf16 matrix kernels for this CPU (AVX-512 cores, AVX512-BF16 or AMX)."""
    return _onednn_supports("_is_mkldnn_bf16_supported")


def cpu_has_fp16_matmul():
    """Whether this CPU multiplies fp16 matrices natively (oneDNN with AVX512-FP16 or AMX-FP16)."""
    return _onednn_supports("_is_mkldnn_fp16_supported")


def _onednn_supports(probe_name):
    """What oneDNN's probe ``probe_name`` answers; False where this torch has no such probe."""
    probe = getattr(torch.ops.mkldnn, probe_name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def check_finite(outputs, precision):
    """``outputs``, or a RuntimeError when a half-precision run gave inf or NaN (an overflow).

    >>> check_finite(torch.tensor([1.0, float("inf")]), "fp16")
    Traceback (most recent call last):
    ...
    RuntimeError: the mask network overflowed in fp16 on this input (non-finite outputs); use --precision bf16 or fp32
    """
    if precision_dtype(precision) != torch.float32 and not bool(torch.isfinite(outputs).all()):
        raise RuntimeError(f"the mask network overflowed in {precision} on this input "
                           f"(non-finite outputs); use --precision bf16 or fp32")
    return outputs


def set_precision(model, precision):
    """Runs ``model``'s mask network in ``precision`` as the module docstring says; in place.

    Arguments
    ---------
    model : nass.model.separator.NoiseAwareSeparator
        In fp32, on the device it will run on (fp16: see :func:`precision_dtype`).
    precision : str
        ``fp32`` or ``tf32`` (the weights stay fp32), ``bf16`` or ``fp16``.

    Returns
    -------
    The same ``model``.
    """
    if precision_dtype(precision) == torch.float32:
        return model
    masknet = model.masknet
    dtype = precision_dtype(precision, next(masknet.parameters()).device)
    if any(p.dtype != torch.float32 for p in masknet.parameters()):
        raise ValueError("set_precision: the mask network is not in fp32 (converted already?)")
    masknet.to(dtype)
    _run_in(masknet, dtype, torch.float32)
    for norm in (m for m in masknet.modules() if isinstance(m, NORMS)):
        _run_in(norm.float(), torch.float32, dtype)
    # From the mask head on, everything stays fp32, down to the masks.
    for name in MASK_HEAD:
        if hasattr(masknet, name):
            _run_in(getattr(masknet, name).float(), torch.float32, torch.float32)
    return model


def _run_in(module, dtype, out_dtype):
    """Hooks casting ``module``'s floating inputs to ``dtype`` and its output to ``out_dtype``."""

    def cast_inputs(_, args):
        return tuple(_cast(a, dtype) for a in args)

    def cast_output(_, __, output):
        return _cast(output, out_dtype)

    module.register_forward_pre_hook(cast_inputs)
    module.register_forward_hook(cast_output)


def _cast(value, dtype):
    if torch.is_tensor(value) and value.is_floating_point():
        return value.to(dtype)
    return value
