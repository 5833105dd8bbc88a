"""Separating recordings with a trained model: named speakers and noise, at the input's rate.

:class:`Separator` holds a loaded model (:mod:`nass.model.loading`) and
separates tensors and files into ``spk1 .. spkC`` (and ``noise``) at the
input's rate and length: any rate (resampled to the model's and back),
channels averaged to mono, long inputs in overlapping windows
(:mod:`nass.inference.windows`) sized for memory (:mod:`nass.inference.memory`),
the mask network in ``bf16``/``fp16`` if asked (:mod:`nass.model.precision`).
Which output is the noise: the last for ``noise_assignment: fixed`` models;
for ``pit`` models the one least like a voice (:mod:`nass.inference.noise_id`);
``noise_output=K`` overrides. :attr:`Sources.report` says which model output
each source came from and why. The windows of one or many inputs go through
the model in batches (``batch_size``), compiled at one shape if asked. About
460 lines: one class, whose batching across inputs needs the bookkeeping.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBRNNBlock
>>> from nass.model import NoiseAwareSeparator, Outputs
>>> block = lambda: SBRNNBlock(input_size=16, hidden_channels=8, num_layers=1, bidirectional=True)
>>> model = NoiseAwareSeparator(
...     Encoder(kernel_size=16, out_channels=16),
...     Dual_Path_Model(16, 16, block(), block(), num_layers=1, K=20, num_spks=3),
...     Decoder(in_channels=16, out_channels=1, kernel_size=16, stride=8, bias=False),
...     Outputs(num_spks=2, noise_output=True, noise_assignment="fixed"))
>>> separator = Separator(model, sample_rate=8000)
>>> sources = separator.separate_tensor(torch.randn(2, 16000), sample_rate=16000)  # stereo, 16 kHz
>>> {name: tuple(signal.shape) for name, signal in sources.items()}
{'spk1': (16000,), 'spk2': (16000,), 'noise': (16000,)}
"""

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import torch
import torchaudio

from nass.audio import AudioInputError, check_sample_rate, pcm_to_float, read_audio, to_mono
from nass.inference.memory import GIB, default_budget
from nass.inference.noise_id import identify_noise
from nass.inference.slices import in_slices
from nass.inference.windows import (choose_batch, choose_window, join_windows, plan_windows,
                                    run_in_batches)
from nass.model.loading import load_pretrained, load_trained
from nass.model.precision import check_finite, precision_dtype, set_precision, set_tf32

logger = logging.getLogger(__name__)

# Windows run through the model at once unless asked otherwise, per device
# type. On a GPU a 30 s window took 37 ms at 16 per batch against 87 ms one
# at a time (bf16, H200, as reported in issue 19); on a CPU a window's matrix
# products fill the cores already (2 windows per batch were no faster per
# window here, benchmarks/README.md) and more windows only multiply the memory.
DEFAULT_BATCH = {"cuda": 16, "cpu": 1}


class Sources(OrderedDict):
    """``{"spk1": [T], .., "noise": [T]}``, with :attr:`report` saying how they were named.

    ``report`` is a JSON-ready dict: ``outputs`` (``{name: model output
    index}``), ``noise`` (how the noise output was chosen: ``"identified"``,
    ``"fixed"`` (the model's last) or ``"given"`` (``noise_output``)),
    ``noise_scores`` (per model output, higher: more like one voice; None
    unless identified), ``noise_probabilities``, ``close`` (the runner-up was
    near), and ``checkpoint``.
    """

    def __init__(self, items=(), report=None):
        super().__init__(items)
        self.report = report or {}


class Prepared(NamedTuple):
    """A recording ready for the model: its length and rate as given, and ``[T]`` at the model's rate."""

    length: int
    sample_rate: int
    resampled: torch.Tensor


class Separator:
    """A loaded separation model that separates tensors and files into named sources.

    Arguments
    ---------
    model : nass.model.NoiseAwareSeparator
        Or any module ``[B, T] -> [B, T, S]`` with ``outputs``
        (:class:`nass.model.Outputs`) and ``kernel_size``.
    sample_rate : int
        The rate the model was trained at.
    chunk_seconds : float, optional
        Window length for long inputs; see
        :func:`nass.inference.windows.choose_window`, whose note on a
        shortened window is kept as ``window_note`` (and logged at INFO).
    device : str or torch.device
        Where the model runs; inputs and outputs stay on the CPU.
    checkpoint : Path, optional
        Where the weights came from (kept as ``self.checkpoint``).
    progress : bool
        Show a progress bar over the windows of long inputs.
    precision : str
        ``fp32`` (default: the exact model; on CUDA with TF32 off), ``tf32``
        (CUDA only: fp32 weights, TF32 matrix products), ``bf16`` or ``fp16``
        (:mod:`nass.model.precision`). Converts ``model`` in place; sets
        PyTorch's process-wide TF32 flags on CUDA (:func:`nass.model.precision.set_tf32`).
        On the CPU the model's dual-path blocks are also made to run their
        sequences in slices, in place (:func:`nass.inference.slices.in_slices`:
        the same outputs, a fraction of the memory).
    max_memory : float, optional
        GiB the model's weights and one batch of windows may take; windows are
        shortened to fit. Default: the weights plus 80 % of the memory
        available now (the system's, or the CUDA device's). Refused for
        models whose memory is not estimated (ONNX Runtime's).
    batch_size : int, optional
        The most windows (of one recording or of several, see
        :meth:`separate_each`) run through the model at once, fewer if
        ``max_memory`` cannot hold them (the number used: ``self.batch_size``).
        Default: :data:`DEFAULT_BATCH` for the device.
    compile : bool
        Run whole windows through ``torch.compile`` of the model, always as
        one ``[batch_size, window]`` shape, so it compiles once (on the
        first batch; the time is kept as ``compile_note``) and never again:
        a batch with fewer windows is filled with windows of zeros (rows of
        a batch are computed independently, so this is exact), and a
        window of another length (the last of a recording, a short
        recording, or every one with one pass) runs through the model
        uncompiled, as padding it would change the outputs.
    """

    def __init__(self, model, sample_rate, chunk_seconds=None, device="cpu", checkpoint=None,
                 progress=False, precision="fp32", max_memory=None, batch_size=None,
                 compile=False):
        self.outputs = model.outputs
        self.device = _device(device)
        precision_dtype(precision, self.device)
        set_tf32(precision, self.device)
        self.precision = precision
        self.model = set_precision(model.to(self.device).eval(), precision)
        if self.device.type == "cpu":
            in_slices(self.model)  # a slice of sequences at a time: the same outputs in less memory
        self.sample_rate = check_sample_rate(sample_rate)
        self.checkpoint = checkpoint
        self.progress = progress
        self.max_memory = self._max_memory(max_memory)
        self.chunk_size, self.window_note = choose_window(self.model, self.sample_rate,
                                                          chunk_seconds, self.max_memory)
        if self.window_note:
            logger.info(self.window_note)
        most = DEFAULT_BATCH.get(self.device.type, 1) if batch_size is None else batch_size
        self.batch_size, self.batch_note = choose_batch(self.model, self.chunk_size,
                                                        self.max_memory, most)
        if self.batch_note:
            logger.info(self.batch_note)
        if compile and not any(True for _ in self.model.parameters()):
            raise ValueError("compile (--compile): a model run by ONNX Runtime is not compiled "
                             "by torch; leave it out")
        self.compiled = torch.compile(self.model, dynamic=False) if compile else None
        self.compile_note = None

    @classmethod
    def from_hparams(cls, hparams_file, checkpoint, overrides=None, **options):
        """The model of a recipe's hparams file with a checkpoint's weights (:func:`nass.model.loading.load_trained`).

        ``options`` are :class:`Separator`'s; the checkpoint used is kept as ``.checkpoint``.

        Example
        -------
        >>> import tempfile
        >>> from speechbrain.utils.checkpoints import Checkpointer
        >>> from nass.model.loading import load_model, recipe_hparams
        >>> small = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1,
        ...          "inter_layers": 1, "nhead": 2, "d_ffn": 32, "chunk_size": 20}
        >>> with tempfile.TemporaryDirectory() as save:
        ...     model = load_model(recipe_hparams(), small)       # stands in for a trained one
        ...     saver = Checkpointer(save, {"encoder": model.encoder, "masknet": model.masknet,
        ...                                 "decoder": model.decoder})
        ...     _ = saver.save_checkpoint(meta={"si-snr": -9.0})
        ...     separator = Separator.from_hparams(recipe_hparams(), save, overrides=small)
        ...     separator.checkpoint.name.startswith("CKPT+"), list(separator.source_names)
        (True, ['spk1', 'spk2', 'noise'])
        """
        _check_early(options)
        trained = load_trained(hparams_file, checkpoint, overrides)
        logger.info("Separating with checkpoint %s", trained.checkpoint)
        return cls(trained.model, trained.sample_rate, checkpoint=trained.checkpoint, **options)

    @classmethod
    def from_pretrained(cls, folder, trust_hparams=False, **options):
        """The model of a SpeechBrain pretrained-model folder (:func:`nass.model.loading.load_pretrained`).

        ``nass export``'s folders label the outputs as the model was trained;
        a SpeechBrain hub model's outputs are all speakers. The folder's
        ``hyperparams.yaml`` may name only constructors of torch, speechbrain
        and nass, unless ``trust_hparams``.
        """
        _check_early(options)
        trained = load_pretrained(folder, trust_hparams=trust_hparams)
        logger.info("Separating with pretrained model %s", folder)
        return cls(trained.model, trained.sample_rate, checkpoint=trained.checkpoint, **options)

    @classmethod
    def from_onnx(cls, path, **options):
        """A model written by ``nass export --format onnx``, run by ONNX Runtime on the CPU in fp32."""
        from nass.inference.onnx_runtime import OnnxSeparator

        if options.get("precision", "fp32") != "fp32" or \
                torch.device(options.get("device", "cpu")).type != "cpu":
            raise ValueError("an ONNX model runs in fp32 on the CPU: leave out precision "
                             "(--precision) and device (--device)")
        model = OnnxSeparator(path)
        return cls(model, model.sample_rate, checkpoint=Path(path), **options)

    @property
    def source_names(self):
        """``["spk1", .., "spkC"]``, then ``"noise"`` when the model has a noise output."""
        return self.outputs.source_names

    def separate_file(self, path, noise_output=None):
        """Separates an audio file; the sources are at the file's sample rate and length.

        Raises :class:`AudioInputError`, naming the file, for a missing,
        unreadable, empty, silent or too short file. ``noise_output`` as in
        :meth:`separate_tensor`.
        """
        return self.separate_files([path], noise_output)[0]

    def separate_files(self, paths, noise_output=None):
        """:meth:`separate_file` of each of ``paths``, their windows batched together (:meth:`separate_each`).

        Raises the first error met (an :class:`AudioInputError` naming its file).
        """
        def recordings():
            for path in paths:
                try:
                    yield (path, *read_audio(path))
                except AudioInputError as err:
                    raise AudioInputError(f"{path}: {err}") from None

        results = []
        for path, result in self.separate_each(recordings(), noise_output):
            if isinstance(result, AudioInputError):
                raise AudioInputError(f"{path}: {result}") from None
            if isinstance(result, Exception):
                raise result
            results.append(result)
        return results

    def separate_tensor(self, waveform, sample_rate, noise_output=None):
        """Separates ``waveform`` (``[T]`` or ``[channels, T]``) recorded at ``sample_rate``.

        Arguments
        ---------
        waveform : torch.Tensor
            Float, or integer PCM scaled to [-1, 1] as soundfile reads files
            (int16 / 2**15, int32 / 2**31, uint8 (x - 128) / 128); bool and
            complex tensors are refused (TypeError).
        sample_rate : int
        noise_output : int, optional
            The model output (0-based, as in ``report["outputs"]``) to call
            the noise, instead of the one identified (or the last, for a
            ``fixed`` model).

        Returns
        -------
        Sources
            ``{"spk1": [T], .., "noise": [T]}`` float32 CPU tensors at
            ``sample_rate``, as long as the input, and their ``report``.
        """
        [(_, result)] = self.separate_each([(None, waveform, sample_rate)], noise_output)
        if isinstance(result, Exception):
            raise result
        return result

    # no_grad, not inference_mode: tensors made here may be cached (the PIT
    # permutations of the window matching) and later used by training.
    @torch.no_grad()
    def separate_each(self, recordings, noise_output=None):
        """Yields ``(key, Sources)`` for each ``(key, waveform, sample_rate)`` of ``recordings``, in order.

        The windows of consecutive recordings go through the model together,
        :attr:`batch_size` at a time (recordings are gathered until their
        windows fill a batch, so memory stays bounded for any number of
        them); each recording's windows are then joined as
        :func:`nass.inference.windows.join_windows` says. A recording that
        cannot be separated yields ``(key, error)`` instead (an
        :class:`AudioInputError`, or a RuntimeError for a half-precision
        overflow), and the others go on. ``noise_output`` as in
        :meth:`separate_tensor`, for all of them.
        """
        try:
            self.check_noise_output(noise_output)
        except ValueError as err:
            raise ValueError(f"noise_output: {err}") from None
        group, windows = [], 0
        for key, waveform, sample_rate in recordings:
            try:
                prepared = self._prepare(waveform, sample_rate)
            except AudioInputError as err:
                group.append((key, err))
                continue
            group.append((key, prepared))
            windows += len(self._windows(prepared.resampled))
            if windows >= self.batch_size:
                yield from self._separate_group(group, noise_output)
                group, windows = [], 0
        yield from self._separate_group(group, noise_output)

    def _separate_group(self, group, noise_output):
        """``(key, Sources or error)`` for each of ``group``'s ``(key, prepared or error)``."""
        spans, windows = [], []
        for _, prepared in group:
            start = len(windows)
            if not isinstance(prepared, Exception):
                windows += [prepared.resampled[a:b] for a, b in self._windows(prepared.resampled)]
            spans.append((start, len(windows)))
        try:
            outputs = run_in_batches(self._run_model, windows, self.batch_size,
                                     progress=self.progress and len(windows) > 1)
        except RuntimeError as err:  # e.g. out of memory: every recording of the batch failed
            outputs = err
        for (key, prepared), (start, stop) in zip(group, spans):
            if isinstance(prepared, Exception):
                yield key, prepared
                continue
            if isinstance(outputs, Exception):
                yield key, outputs
                continue
            try:
                for output in outputs[start:stop]:
                    check_finite(output, self.precision)
            except RuntimeError as err:
                yield key, err
                continue
            joined = self._join(outputs[start:stop], prepared.resampled)
            yield key, self._finish(joined, prepared, noise_output)
            outputs[start:stop] = [None] * (stop - start)  # each recording's windows freed once joined

    def _windows(self, resampled):
        """``[(start, stop), ..]`` of the windows of a resampled ``[T]`` mixture."""
        if self.chunk_size is None:
            return [(0, resampled.shape[-1])]
        return plan_windows(resampled.shape[-1], self.chunk_size)

    def _join(self, outputs, resampled):
        if self.chunk_size is None:
            return outputs[0]
        return join_windows(outputs, resampled, self.chunk_size, fixed_last=self.outputs.fixed_noise)

    def _prepare(self, waveform, sample_rate):
        """The checked mono waveform, its rate and its ``[T]`` resampled to the model's rate."""
        sample_rate = check_sample_rate(sample_rate)
        mono = to_mono(pcm_to_float(waveform).cpu())
        resampled = self._resample(mono, sample_rate, self.sample_rate)
        if resampled.shape[-1] < self.model.kernel_size:
            raise AudioInputError(
                f"too short: {mono.shape[-1]} samples at {sample_rate} Hz "
                f"({1000 * mono.shape[-1] / sample_rate:.2f} ms); the model needs at least "
                f"{self.model.kernel_size} samples at its {self.sample_rate} Hz "
                f"({1000 * self.model.kernel_size / self.sample_rate:.2f} ms)"
            )
        return Prepared(mono.shape[-1], sample_rate, resampled)

    def _finish(self, outputs, prepared, noise_output):
        """:class:`Sources` from the model's joined ``[T, S]`` outputs of one recording."""
        order, report = self._output_order(outputs, noise_output)
        # One copy, [T, S] -> [S, T] in the sources' order (4 bytes per sample
        # and output on a long file).
        outputs = torch.stack([outputs[:, k] for k in order])
        back = _fit_length(self._resample(outputs, self.sample_rate, prepared.sample_rate),
                           prepared.length)
        return Sources(zip(self.source_names, back.float().unbind(0)), report)

    def _run_model(self, mixture):
        """``[B, t, S]`` float32 CPU outputs of ``mixture`` ``[B, t]``."""
        rows, length = mixture.shape
        if self.compiled is None or length != self.chunk_size:
            return self.model(mixture.to(self.device)).float().cpu()
        batch = torch.zeros(self.batch_size, length, device=self.device)
        batch[:rows] = mixture.to(self.device)
        start = time.perf_counter()
        outputs = self.compiled(batch)[:rows].float().cpu()
        if self.compile_note is None:
            self.compile_note = (f"model compiled for {self.batch_size} x "
                                 f"{length / self.sample_rate:g} s windows: the first batch took "
                                 f"{time.perf_counter() - start:.1f} s, compiling included")
            logger.info(self.compile_note)
        return outputs

    def check_noise_output(self, noise_output):
        """Raises ValueError saying why ``noise_output`` cannot be the noise output (None is fine)."""
        if noise_output is None:
            return
        if not self.outputs.noise_output:
            raise ValueError("the model has no noise output")
        n_out = self.outputs.num_outputs
        if isinstance(noise_output, bool) or not isinstance(noise_output, int) \
                or not 0 <= noise_output < n_out:
            raise ValueError(f"must be a model output from 0 to {n_out - 1}, got {noise_output!r}")

    def _output_order(self, outputs, noise_output=None):
        """Output indices in the order speakers, then noise; and the report of :class:`Sources`."""
        n_out = outputs.shape[-1]
        report = {"noise": None, "noise_scores": None, "noise_probabilities": None,
                  "close": False, "checkpoint": str(self.checkpoint) if self.checkpoint else None}
        if not self.outputs.noise_output:
            order = list(range(n_out))
        else:
            if noise_output is not None:
                noise, report["noise"] = noise_output, "given"
            elif self.outputs.fixed_noise:
                noise, report["noise"] = n_out - 1, "fixed"
            else:
                choice = identify_noise(outputs, self.sample_rate)
                noise, report["noise"] = choice.index, "identified"
                report.update(noise_scores=[round(v, 4) for v in choice.scores],
                              noise_probabilities=[round(v, 4) for v in choice.probabilities],
                              close=choice.close)
            order = [k for k in range(n_out) if k != noise] + [noise]
        report["outputs"] = dict(zip(self.source_names, order))
        return order, report

    def _max_memory(self, max_memory):
        """GiB for the weights and a window, or None when this model's memory is not estimated."""
        if max_memory is not None and (isinstance(max_memory, bool) or
                                       not isinstance(max_memory, (int, float)) or
                                       not max_memory > 0):
            raise ValueError(f"max_memory must be a positive number of GiB, got {max_memory!r}")
        if not any(True for _ in self.model.parameters()):  # ONNX Runtime: nothing to trace
            if max_memory is not None:
                raise ValueError("max_memory (--max-memory): the memory of ONNX Runtime is not "
                                 "estimated; leave it out")
            return None
        if max_memory is None:
            return default_budget(self.model, self.device) / GIB
        return float(max_memory)

    @staticmethod
    def _resample(signal, from_rate, to_rate):
        if from_rate == to_rate:
            return signal
        return torchaudio.functional.resample(signal, orig_freq=from_rate, new_freq=to_rate)


def _fit_length(signals, length):
    """``signals`` ``[S, t]`` cut or zero-padded to ``[S, length]``."""
    if signals.shape[-1] >= length:
        return signals[..., :length]
    return torch.nn.functional.pad(signals, (0, length - signals.shape[-1]))


def _device(device):
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device: give cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here")
    return device


def _check_early(options):
    """Refuses a precision the device cannot run before any weights are loaded."""
    precision_dtype(options.get("precision", "fp32"), _device(options.get("device", "cpu")))
