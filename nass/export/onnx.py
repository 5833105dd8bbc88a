"""The separator as one ONNX graph, checked against PyTorch with ONNX Runtime.

:func:`export_onnx` writes encoder, mask network and decoder as one graph
``mix [batch, time] -> sources [batch, time, outputs]``, batch and time
dynamic, with the model's :class:`nass.model.Outputs`, rate and kernel in the
file's metadata (run by :mod:`nass.inference.onnx_runtime`). The graph holds
:class:`ExportGroupNorm` instead of ``nn.GroupNorm``: exported as is,
SpeechBrain's ``GroupNorm(1, N)`` becomes ONNX ``InstanceNormalization``,
whose ONNX Runtime CPU kernel loses float32 precision over its one long
reduction (channels x frames), more the longer the input; two short
reductions compute the same function and keep ONNX Runtime within about
100 dB of PyTorch (figures in ``benchmarks/README.md``).

Example
-------
>>> import torch
>>> norm = torch.nn.GroupNorm(1, 4, eps=1e-8)
>>> x = torch.rand(2, 4, 50)
>>> torch.allclose(ExportGroupNorm.like(norm)(x), norm(x), atol=1e-6)
True
"""

import contextlib
import copy
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nass.export import check_writable
from nass.files import atomic_path
from nass.inference.onnx_runtime import METADATA_KEY, OnnxSeparator

logger = logging.getLogger(__name__)

ONNX_FILE = "separator.onnx"
# Opset of the exported graph: 18 runs on ONNX Runtime 1.14 and newer.
OPSET = 18
# ONNX Runtime's outputs must be this close to PyTorch's on every output.
MIN_SDR_DB = 50.0
# The exporter's own chatter (optimiser passes, torchvision's missing ops).
EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


class ExportGroupNorm(nn.Module):
    """``nn.GroupNorm`` computed with short reductions (see the module's docstring).

    Arguments
    ---------
    num_groups, num_channels, eps
        As ``nn.GroupNorm``; the affine parameters are ``weight`` and ``bias``.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5):
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    @classmethod
    def like(cls, norm):
        """An :class:`ExportGroupNorm` holding ``norm``'s parameters (affine norms only)."""
        if not norm.affine:
            raise ValueError("ExportGroupNorm stands in for affine GroupNorms only")
        out = cls(norm.num_groups, norm.num_channels, norm.eps)
        out.load_state_dict(norm.state_dict())
        return out

    def forward(self, x):
        """``x`` ``[B, C, ...]`` normalised per group over channels and all positions."""
        batch, channels = x.shape[:2]
        groups = x.reshape(batch, self.num_groups, channels // self.num_groups, -1)
        mean = groups.mean(dim=-1, keepdim=True).mean(dim=-2, keepdim=True)
        centred = groups - mean
        var = centred.square().mean(dim=-1, keepdim=True).mean(dim=-2, keepdim=True)
        normed = (centred * torch.rsqrt(var + self.eps)).reshape(x.shape)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        return normed * self.weight.reshape(shape) + self.bias.reshape(shape)


def exportable(model):
    """A copy of ``model`` (eval mode) with every affine ``nn.GroupNorm`` an :class:`ExportGroupNorm`."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.GroupNorm) and module.affine:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, ExportGroupNorm.like(module))
    return model


def signal_to_difference_db(reference, estimate):
    """``10 log10(|ref|^2 / |est - ref|^2)`` per output of ``[B, T, S]`` arrays: ``[B, S]``.

    >>> ref = np.ones((1, 100, 2), dtype=np.float32)
    >>> signal_to_difference_db(ref, ref * 1.001).round(1)
    array([[60., 60.]])
    """
    reference = np.asarray(reference, dtype=np.float64)
    difference = np.asarray(estimate, dtype=np.float64) - reference
    signal = np.square(reference).sum(axis=1)
    noise = np.square(difference).sum(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(signal / noise)


def export_onnx(model, path, sample_rate, window_seconds=2.0,
                check_seconds=None, seed=0):
    """Writes ``model`` (a :class:`nass.model.separator.NoiseAwareSeparator`) to ``path`` and checks it.

    The graph is traced with a ``window_seconds`` input, its batch and time
    axes dynamic; ONNX Runtime then separates random mixtures of
    ``check_seconds`` lengths (default: the window, a shorter odd length
    and a longer one) and every output must be within :data:`MIN_SDR_DB` of
    PyTorch's.

    Arguments
    ---------
    model : nass.model.separator.NoiseAwareSeparator
    path : str or Path
        The ``.onnx`` file to write (weights inside it).
    sample_rate : int
    window_seconds : float
        Length of the input the graph is traced with.
    check_seconds : list of float, optional
        Lengths ONNX Runtime is checked at.
    seed : int
        Seed of the check mixtures.

    Returns
    -------
    dict
        ``{"path", "lengths" (samples checked), "min_sdr_db" (per length, worst output)}``.

    Raises
    ------
    RuntimeError
        ONNX Runtime's outputs differ from PyTorch's by more than the threshold.
    """
    path = Path(path)
    window = round(window_seconds * sample_rate)
    if window < model.kernel_size:
        raise ValueError(f"window of {window_seconds} s is shorter than the encoder kernel")
    graph = exportable(model)
    example = 0.1 * torch.randn(2, window, generator=torch.Generator().manual_seed(seed))
    batch = torch.export.Dim("batch", min=1, max=1024)
    time = torch.export.Dim("time", min=model.kernel_size, max=sample_rate * 3600)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet(EXPORTER_LOGGERS):
        program = torch.onnx.export(
            graph, (example,), dynamo=True, opset_version=OPSET, input_names=["mix"],
            output_names=["sources"], dynamic_shapes={"mix": {0: batch, 1: time}},
            external_data=False, verbose=False,
        )
    facts = {**model.outputs.to_dict(), "sample_rate": int(sample_rate),
             "kernel_size": int(model.kernel_size), "traced_samples": window}
    program.model.metadata_props[METADATA_KEY] = json.dumps(facts)
    lengths = [round(s * sample_rate) for s in check_seconds] if check_seconds else \
        [window, window // 2 + 3, 3 * window // 2 + 5]
    # Saved under a hidden name until checked: a graph that fails the check
    # is not left where a user would take it for a good one.
    with atomic_path(path) as partial:
        program.save(str(partial), external_data=False)
        results = check_onnx(model, partial, lengths, seed=seed + 1)
    return {"path": path, "lengths": lengths, "min_sdr_db": results}


def export_onnx_file(trained, out_dir, window_seconds=2.0, overwrite=False):
    """Writes ``<out_dir>/separator.onnx`` for a :class:`nass.model.loading.TrainedModel`.

    Returns :func:`export_onnx`'s report.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, [ONNX_FILE], overwrite)
    return export_onnx(trained.model, out_dir / ONNX_FILE, trained.sample_rate,
                       window_seconds=window_seconds)


def check_onnx(model, path, lengths, seed=0):
    """Worst signal-to-difference (dB) of ONNX Runtime's outputs against ``model``'s, per length.

    Raises RuntimeError if any output is below :data:`MIN_SDR_DB`.
    """
    session = OnnxSeparator(path)
    generator = torch.Generator().manual_seed(seed)
    worst = []
    model = copy.deepcopy(model).eval()
    for length in lengths:
        mix = 0.1 * torch.randn(2, length, generator=generator)
        with torch.no_grad():
            reference = model(mix).numpy()
        estimate = session.run(mix.numpy())
        if estimate.shape != reference.shape:
            raise RuntimeError(f"{path}: ONNX Runtime gave shape {estimate.shape} for "
                               f"{length} samples, PyTorch {reference.shape}")
        sdr = float(signal_to_difference_db(reference, estimate).min())
        worst.append(sdr)
        logger.info("ONNX Runtime vs PyTorch, %d samples: worst output %.1f dB", length, sdr)
        if not sdr >= MIN_SDR_DB:
            raise RuntimeError(f"{path}: ONNX Runtime's outputs differ from PyTorch's "
                               f"({sdr:.1f} dB < {MIN_SDR_DB:g} dB at {length} samples)")
    return worst


@contextlib.contextmanager
def _quiet(names):
    """Only errors from the loggers ``names``, and no Python warnings, while inside.

    The exporter warns about its own internals (traced code, missing
    torchvision operators); the graph is checked numerically instead.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
