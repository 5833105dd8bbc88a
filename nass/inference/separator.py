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
each source came from and why.

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
from collections import OrderedDict
from pathlib import Path

import torch
import torchaudio

from nass.audio import AudioInputError, read_audio
from nass.inference.memory import GIB, default_budget
from nass.inference.noise_id import identify_noise
from nass.inference.windows import choose_window, separate_in_chunks
from nass.model.loading import load_pretrained, load_trained
from nass.model.precision import check_finite, precision_dtype, set_precision, set_tf32

logger = logging.getLogger(__name__)


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
    max_memory : float, optional
        GiB the model's weights and one window may take; windows are
        shortened to fit. Default: the weights plus 80 % of the memory
        available now (the system's, or the CUDA device's). Refused for
        models whose memory is not estimated (ONNX Runtime's).
    """

    def __init__(self, model, sample_rate, chunk_seconds=None, device="cpu", checkpoint=None,
                 progress=False, precision="fp32", max_memory=None):
        self.outputs = model.outputs
        self.device = _device(device)
        precision_dtype(precision, self.device)
        set_tf32(precision, self.device)
        self.precision = precision
        self.model = set_precision(model.to(self.device).eval(), precision)
        self.sample_rate = self._check_rate(sample_rate)
        self.checkpoint = checkpoint
        self.progress = progress
        self.max_memory = self._max_memory(max_memory)
        self.chunk_size, self.window_note = choose_window(self.model, self.sample_rate,
                                                          chunk_seconds, self.max_memory)
        if self.window_note:
            logger.info(self.window_note)

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
        try:
            return self.separate_tensor(*read_audio(path), noise_output=noise_output)
        except AudioInputError as err:
            raise AudioInputError(f"{path}: {err}") from None

    # no_grad, not inference_mode: tensors made here may be cached (the PIT
    # permutations of the window matching) and later used by training.
    @torch.no_grad()
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
        try:
            self.check_noise_output(noise_output)
        except ValueError as err:
            raise ValueError(f"noise_output: {err}") from None
        sample_rate = self._check_rate(sample_rate)
        mono = self._mono(pcm_to_float(waveform).cpu())
        resampled = self._resample(mono, sample_rate, self.sample_rate)
        if resampled.shape[-1] < self.model.kernel_size:
            raise AudioInputError(
                f"too short: {mono.shape[-1]} samples at {sample_rate} Hz "
                f"({1000 * mono.shape[-1] / sample_rate:.2f} ms); the model needs at least "
                f"{self.model.kernel_size} samples at its {self.sample_rate} Hz "
                f"({1000 * self.model.kernel_size / self.sample_rate:.2f} ms)"
            )
        if self.chunk_size is None:
            outputs = self._run_model(resampled[None])[0]
        else:
            outputs = separate_in_chunks(self._run_model, resampled[None], self.chunk_size,
                                         fixed_last=self.outputs.fixed_noise,
                                         progress=self.progress)[0]
        order, report = self._output_order(outputs, noise_output)
        # One copy, [T, S] -> [S, T] in the sources' order (4 bytes per sample
        # and output on a long file).
        outputs = torch.stack([outputs[:, k] for k in order])
        back = _fit_length(self._resample(outputs, self.sample_rate, sample_rate), mono.shape[-1])
        return Sources(zip(self.source_names, back.float().unbind(0)), report)

    def _run_model(self, mixture):
        return check_finite(self.model(mixture.to(self.device)).float().cpu(), self.precision)

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
    def _mono(waveform):
        channels = waveform
        if waveform.dim() == 2:
            if waveform.shape[0] > waveform.shape[1]:
                raise AudioInputError(
                    f"expected a [channels, T] waveform, got shape {tuple(waveform.shape)}: "
                    f"{waveform.shape[0]} channels of {waveform.shape[1]} samples each; if it "
                    f"is [T, channels], pass waveform.T"
                )
            waveform = waveform.mean(dim=0)
        if waveform.dim() != 1:
            raise AudioInputError(
                f"expected a [T] or [channels, T] waveform, got shape {tuple(waveform.shape)}"
            )
        if waveform.numel() == 0:
            raise AudioInputError("empty (no samples)")
        if not torch.isfinite(waveform).all():
            raise AudioInputError("contains NaN or infinite samples")
        if not waveform.any():
            if channels.any():
                raise AudioInputError(
                    f"its {channels.shape[0]} channels cancel out when averaged to mono (one is "
                    f"the other's negative): separate one channel, e.g. waveform[0]")
            raise AudioInputError("silent (all samples are zero): nothing to separate")
        return waveform

    @staticmethod
    def _check_rate(sample_rate):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
            raise TypeError(f"sample_rate must be a number of Hz, got {sample_rate!r}")
        if sample_rate <= 0 or int(sample_rate) != sample_rate:
            raise AudioInputError(
                f"sample rate must be a positive whole number of Hz, got {sample_rate}")
        return int(sample_rate)

    @staticmethod
    def _resample(signal, from_rate, to_rate):
        if from_rate == to_rate:
            return signal
        return torchaudio.functional.resample(signal, orig_freq=from_rate, new_freq=to_rate)


# Integer PCM as soundfile scales it when reading files: full scale is 1.0.
_PCM_SCALE = {torch.int16: (0, 2 ** 15), torch.int32: (0, 2 ** 31), torch.uint8: (128, 128)}


def pcm_to_float(waveform):
    """``waveform`` as float32: integer PCM scaled to [-1, 1], other real dtypes converted.

    >>> pcm_to_float(torch.tensor([-32768, 16384], dtype=torch.int16))
    tensor([-1.0000,  0.5000])
    >>> pcm_to_float(torch.tensor([True]))
    Traceback (most recent call last):
    ...
    TypeError: waveform: a bool tensor holds no audio samples; pass float samples or integer PCM (int16, int32, uint8)
    """
    waveform = torch.as_tensor(waveform)
    dtype = waveform.dtype
    if dtype == torch.bool or dtype.is_complex:
        raise TypeError(f"waveform: a {str(dtype).replace('torch.', '')} tensor holds no audio "
                        f"samples; pass float samples or integer PCM (int16, int32, uint8)")
    if dtype in _PCM_SCALE:
        offset, scale = _PCM_SCALE[dtype]
        return (waveform.double() - offset).div(scale).float()
    if not dtype.is_floating_point:
        raise TypeError(f"waveform: {str(dtype).replace('torch.', '')} is not a PCM sample "
                        f"type; pass float samples or integer PCM (int16, int32, uint8)")
    return waveform.float()


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
