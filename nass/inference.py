"""Separating recordings with a trained model: named speakers and noise, at the input's rate.

:class:`Separator` loads a model once, from a recipe's hparams file and a
checkpoint (``Separator.from_hparams``), then separates tensors
(``separate_tensor``) and files (``separate_file``) into an ordered dict
``spk1 .. spkC`` (and ``noise`` when the model has a noise output) of 1-D
float tensors at the input's sample rate and length:

* Any sample rate: the input is resampled to the model's rate
  (``torchaudio.functional.resample``) and the outputs back to the input's.
* Stereo and multichannel inputs are downmixed to mono by averaging the
  channels: the models are trained on single-channel mixtures, and the mean
  keeps the level of a source that is in every channel.
* Any format soundfile reads (WAV, FLAC, OGG, ...).
* Long inputs are separated in overlapping windows (:mod:`nass.chunking`),
  so memory stays bounded whatever the length.
* ``precision="bf16"`` or ``"fp16"`` runs the mask network's weights in
  half precision (:mod:`nass.precision`, which says on which hardware
  each is faster): less memory, outputs about 40 dB (bf16) or 58 dB
  (fp16) SI-SNR from fp32's; the default ``"fp32"`` is the exact model.

Which output is the noise: a model trained with ``noise_assignment: fixed``
has it last. One trained with ``pit`` (the release) may put it on any output,
so :func:`nass.noise_id.identify_noise` takes the output that sounds least
like one voice (re-exported here: :func:`pick_noise`, :func:`speech_likeness`).
The sources returned are :class:`Sources`: an ordered dict that also says
which model output each source came from, the noise scores and whether the
choice was close (:attr:`Sources.report`, written by ``nass separate`` as
``<stem>_sources.json``); ``noise_output=K`` overrides the choice.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBRNNBlock
>>> from nass.separator import NoiseAwareSeparator
>>> block = lambda: SBRNNBlock(input_size=16, hidden_channels=8, num_layers=1, bidirectional=True)
>>> model = NoiseAwareSeparator(
...     Encoder(kernel_size=16, out_channels=16),
...     Dual_Path_Model(16, 16, block(), block(), num_layers=1, K=20, num_spks=3),
...     Decoder(in_channels=16, out_channels=1, kernel_size=16, stride=8, bias=False),
...     num_spks=2, noise_output=True)
>>> separator = Separator(model, sample_rate=8000, noise_assignment="fixed")
>>> sources = separator.separate_tensor(torch.randn(2, 16000), sample_rate=16000)  # stereo, 16 kHz
>>> {name: tuple(signal.shape) for name, signal in sources.items()}
{'spk1': (16000,), 'spk2': (16000,), 'noise': (16000,)}
"""

import json
import logging
import math
import os
import re
import secrets
from collections import OrderedDict
from pathlib import Path

import torch
import torchaudio
import yaml
from hyperpyyaml import load_hyperpyyaml

# output_paths and save_sources are imported from here by existing callers.
from nass.audio import AudioInputError, output_paths, read_audio, save_sources  # noqa: F401
from nass.checkpoints import check_fit, checkpoint_to_evaluate, load_state
from nass.chunking import DEFAULT_OVERLAP, longest_input, max_positions, separate_in_chunks
from nass.noise_id import identify_noise, pick_noise, speech_likeness  # noqa: F401 (re-exported)
from nass.logs import quiet_torchvision_note
from nass.memory import GIB, default_budget, give_back_large_blocks, plan_window
from nass.outputs import Outputs
from nass.overrides import check_overrides
from nass.precision import check_finite, precision_dtype, set_precision

logger = logging.getLogger(__name__)

# Measured with the release-size Sepformer (random weights) on a 2-core CPU,
# one thread, with SpeechBrain's attention: a window's CPU time per second of
# audio grows from 1.8-2.2 s (up to 8 s) to 3.2 s (32 s). Its memory, with
# the fused attention, grows by about 33 MiB per second of audio in fp32 (22
# in bf16; nass.memory, checked against measured peaks): about 1 GiB at 30 s.
# 30 s separates the test mixtures of LibriMix and WHAM! (almost all shorter)
# in one pass, i.e. exactly as the recipe's evaluation and the reference
# implementation do; use shorter windows (8 s) for speed.
DEFAULT_CHUNK_SECONDS = 30.0


class MemoryBudgetError(ValueError):
    """``max_memory`` is too little for even the shortest window of the model."""


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
    model : nass.separator.NoiseAwareSeparator
        Or any module ``[B, T] -> [B, T, S]`` with ``num_spks``,
        ``noise_output`` and ``kernel_size``.
    sample_rate : int
        The rate the model was trained at.
    noise_assignment : str
        ``"fixed"``: the last output is the noise; ``"pit"``:
        :func:`nass.noise_id.identify_noise` finds it.
    chunk_seconds : float, optional
        Window length for long inputs (:mod:`nass.chunking`);
        :data:`DEFAULT_CHUNK_SECONDS` when None, ``math.inf`` for one pass.
        Either is capped at the longest input the model can take
        (:func:`nass.chunking.longest_input`) and at the longest window
        whose memory fits ``max_memory``; when a length the caller asked
        for is capped (or the default, for memory), ``window_note`` says so
        (and it is logged).
    device : str or torch.device
        Where the model runs; inputs and outputs stay on the CPU.
    checkpoint : Path, optional
        The checkpoint the weights came from (kept as ``self.checkpoint``).
    progress : bool
        Show a progress bar over the windows of long inputs.
    precision : str
        ``fp32`` (default: the exact model), ``bf16`` or ``fp16`` (CUDA, or
        a CPU with native fp16): the mask network's weights in that precision, what needs fp32
        kept in fp32 (:mod:`nass.precision`). Converts ``model`` in place.
    max_memory : float, optional
        GiB that the model's weights and one window's forward pass may take
        (estimated by :func:`nass.memory.window_bytes`; kept as
        ``self.max_memory``); windows are shortened to fit, and
        :class:`MemoryBudgetError` is raised when not even the shortest
        window fits. Default: the weights plus 80 % of the memory available
        now (the system's, or the CUDA device's).
        ONNX models are not capped.

    Also sets glibc's malloc to give large freed blocks back to the system
    (:func:`nass.memory.give_back_large_blocks`): the memory of one window
    is then what the estimate says, from the first window to the last.
    """

    def __init__(self, model, sample_rate, noise_assignment="pit", chunk_seconds=None,
                 device="cpu", checkpoint=None, progress=False, precision="fp32",
                 max_memory=None):
        self.outputs = Outputs(model.num_spks, model.noise_output, noise_assignment)
        self.device = _device(device)
        precision_dtype(precision, self.device)
        self.precision = precision
        self.model = set_precision(model.to(self.device).eval(), precision)
        self.sample_rate = int(sample_rate)
        self.checkpoint = checkpoint
        self.progress = progress
        self.chunk_seconds = DEFAULT_CHUNK_SECONDS if chunk_seconds is None else float(chunk_seconds)
        self.window_note = None
        give_back_large_blocks()
        self.max_memory = self._max_memory(max_memory)
        self.chunk_size = self._chunk_size(self.chunk_seconds, asked=chunk_seconds is not None)

    @classmethod
    def from_hparams(cls, hparams_file, checkpoint, overrides=None, device="cpu",
                     chunk_seconds=None, progress=False, precision="fp32", max_memory=None):
        """Builds the model of a recipe's hparams file and loads a checkpoint's weights.

        Arguments
        ---------
        hparams_file : str or Path
            E.g. ``recipes/LibriMix/separation/hparams/sepformer-libri2mix.yaml``;
            its ``separator``, ``sample_rate`` and ``outputs`` are used.
        checkpoint : str or Path
            A ``CKPT+...`` folder, or a ``save/`` folder holding several: the
            one the recipe's evaluation would use
            (:func:`nass.checkpoints.checkpoint_to_evaluate`; logged, and kept
            as ``.checkpoint``).
        overrides : dict or str, optional
            HyperPyYAML overrides, as on the recipe's command line
            (``{"num_spks": 3}``); they must describe the trained model.
        device, chunk_seconds, progress, precision, max_memory
            As in :class:`Separator`.

        Raises
        ------
        FileNotFoundError
            No hparams file, or no checkpoint in ``checkpoint``.
        nass.checkpoints.CheckpointMismatchError
            The checkpoint was trained with another architecture.

        Example
        -------
        >>> import tempfile
        >>> from speechbrain.utils.checkpoints import Checkpointer
        >>> import nass
        >>> hparams = (Path(nass.__file__).parents[1] / "recipes" / "LibriMix" / "separation"
        ...            / "hparams" / "sepformer-libri2mix.yaml")
        >>> small = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1,
        ...          "inter_layers": 1, "nhead": 2, "d_ffn": 32, "chunk_size": 20}
        >>> with tempfile.TemporaryDirectory() as save:
        ...     model = load_model(hparams, small)          # stands in for a trained one
        ...     saver = Checkpointer(save, {"encoder": model.encoder, "masknet": model.masknet,
        ...                                 "decoder": model.decoder})
        ...     _ = saver.save_checkpoint(meta={"si-snr": -9.0})
        ...     separator = Separator.from_hparams(hparams, save, overrides=small)
        ...     separator.checkpoint.name.startswith("CKPT+"), list(separator.source_names)
        (True, ['spk1', 'spk2', 'noise'])
        """
        hparams_file = Path(hparams_file)
        precision_dtype(precision, _device(device))  # refuse before loading anything
        ckpt = checkpoint_to_evaluate(checkpoint)
        logger.info("Separating with checkpoint %s", ckpt)
        hparams = load_hparams(hparams_file, overrides)
        model = hparams["separator"]
        modules = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
        check_fit(modules, ckpt, hparams_name=str(hparams_file))
        for name, module in modules.items():
            module.load_state_dict(load_state(ckpt / f"{name}.ckpt"), strict=True)
        return cls(model, hparams["sample_rate"], hparams["outputs"].noise_assignment,
                   chunk_seconds=chunk_seconds, device=device, checkpoint=ckpt, progress=progress,
                   precision=precision, max_memory=max_memory)

    @classmethod
    def from_pretrained(cls, folder, device="cpu", chunk_seconds=None, progress=False,
                        precision="fp32", max_memory=None):
        """Loads a SpeechBrain pretrained-model folder (:mod:`nass.pretrained`).

        The folder is one written by ``nass export`` (its outputs are
        labelled as the model was trained: speakers, and the noise) or a
        SpeechBrain hub model downloaded by the user, e.g.
        ``speechbrain/sepformer-wham`` (all outputs are speakers).
        """
        from nass.pretrained import load_pretrained

        model, hparams, facts = load_pretrained(folder)
        logger.info("Separating with pretrained model %s", folder)
        return cls(model, hparams["sample_rate"], facts["noise_assignment"],
                   chunk_seconds=chunk_seconds, device=device, checkpoint=Path(folder),
                   progress=progress, precision=precision, max_memory=max_memory)

    @classmethod
    def from_onnx(cls, path, chunk_seconds=None, progress=False):
        """Runs a model written by ``nass export --format onnx`` with ONNX Runtime (CPU).

        The windows and the labelling of the outputs are those of the
        PyTorch model (:class:`nass.onnx_export.OnnxSeparator`); the memory
        of ONNX Runtime is not estimated, so windows are not capped for it.
        """
        from nass.onnx_export import OnnxSeparator

        model = OnnxSeparator(path)
        return cls(model, model.sample_rate, model.noise_assignment, chunk_seconds=chunk_seconds,
                   checkpoint=Path(path), progress=progress)

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
        mono = self._mono(torch.as_tensor(waveform, dtype=torch.float32).cpu())
        sample_rate = self._check_rate(sample_rate)
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

    def _output_order(self, outputs, noise_output=None):
        """Output indices in the order speakers, then noise; and the report of :class:`Sources`."""
        n_out = outputs.shape[-1]
        report = {"noise": None, "noise_scores": None, "noise_probabilities": None,
                  "close": False, "checkpoint": str(self.checkpoint) if self.checkpoint else None}
        if noise_output is not None:
            if not self.outputs.noise_output:
                raise ValueError("noise_output was given but the model has no noise output")
            if not (isinstance(noise_output, int) and 0 <= noise_output < n_out):
                raise ValueError(f"noise_output must be an output index from 0 to {n_out - 1}, "
                                 f"got {noise_output!r}")
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

    def _estimable(self):
        """Whether the memory of a window can be estimated: a PyTorch model with weights."""
        return any(True for _ in self.model.parameters())

    def _max_memory(self, max_memory):
        if max_memory is not None and not max_memory > 0:
            raise ValueError(f"max_memory must be a positive number of GiB, got {max_memory}")
        if not self._estimable():
            if max_memory is not None:
                raise ValueError("max_memory: the memory of this model (ONNX Runtime) is not "
                                 "estimated; leave max_memory out")
            return None
        if max_memory is None:
            return default_budget(self.model, self.device) / GIB
        return float(max_memory)

    def _chunk_size(self, chunk_seconds, asked=True):
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
        size = None if math.isinf(chunk_seconds) else round(chunk_seconds * self.sample_rate)
        # Every window, the last included, is longer than the overlap, and
        # must be at least one encoder kernel long.
        shortest = math.ceil(self.model.kernel_size / DEFAULT_OVERLAP)
        if size is not None and round(size * DEFAULT_OVERLAP) < self.model.kernel_size:
            raise ValueError(f"chunk_seconds must be at least {shortest / self.sample_rate:.4f} s, "
                             f"got {chunk_seconds}")
        longest = longest_input(self.model)
        note = None
        if longest is not None and (size is None or size > longest):
            size = longest
            note = (f"windows capped at {longest / self.sample_rate:.2f} s instead of "
                    f"{chunk_seconds:g} s: the model cannot separate more in one pass (its "
                    f"positional encoding covers at most {max_positions(self.model)} chunks of "
                    f"{self.model.masknet.K} frames)")
            if not asked:
                logger.info(note)
                note = None
        if self.max_memory is not None:
            fits, size_bytes, shortest_bytes = plan_window(self.model, self.max_memory * GIB,
                                                           shortest, asked=size)
            if fits is None:
                raise MemoryBudgetError(
                    f"max_memory (--max-memory) of {self.max_memory:.3g} GiB is too little for "
                    f"this model: its weights and the shortest window "
                    f"({shortest / self.sample_rate:.4f} s) need about "
                    f"{shortest_bytes / GIB:.3g} GiB")
            if size is None or fits < size:
                wanted = ("longer windows" if size is None else
                          f"a {size / self.sample_rate:g} s window, about "
                          f"{size_bytes / GIB:.3g} GiB,")
                asked_for = f"{chunk_seconds:g} s" if asked else f"the default {chunk_seconds:g} s"
                note = (f"windows capped at {fits / self.sample_rate:.2f} s instead of "
                        f"{asked_for}: {wanted} would not fit in the {self.max_memory:.3g} GiB "
                        f"allowed for the model and one window (--max-memory; default 80 % of "
                        f"the memory available)")
                size = fits
        if note:
            self.window_note = note
            # Marked, so that `nass separate`, which prints the note itself, can drop this record.
            logger.warning(note, extra={"window_note": True})
        return size

    @staticmethod
    def _mono(waveform):
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
            raise AudioInputError("silent (all samples are zero): nothing to separate")
        return waveform

    @staticmethod
    def _check_rate(sample_rate):
        if sample_rate <= 0 or int(sample_rate) != sample_rate:
            raise AudioInputError(
                f"sample rate must be a positive whole number of Hz, got {sample_rate}")
        return int(sample_rate)

    @staticmethod
    def _resample(signal, from_rate, to_rate):
        if from_rate == to_rate:
            return signal
        return torchaudio.functional.resample(signal, orig_freq=from_rate, new_freq=to_rate)


def load_hparams(hparams_file, overrides=None):
    """The hparams of a recipe's yaml file, for inference: no data folder, nothing written.

    The data folder is set to the file's own folder (nothing is read from it)
    and the checkpointer is left out (it would create the output folder).
    Overrides must name settings of the model (:func:`nass.overrides.check_overrides`).
    """
    hparams_file = Path(hparams_file)
    if not hparams_file.is_file():
        raise FileNotFoundError(f"no hparams file {hparams_file}")
    try:
        text = hparams_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{hparams_file} is not a YAML hparams file (not text)") from None
    if isinstance(overrides, str):
        overrides = yaml.safe_load(overrides) or {}
    check_overrides(overrides or {}, text, str(hparams_file), purpose="inference")
    settings = set(re.findall(r"^([A-Za-z_]\w*)\s*:", text, flags=re.MULTILINE))
    if "separator" not in settings:
        raise ValueError(f"{hparams_file} builds no `separator`: not a NASS recipe hparams file")
    merged = {}
    if "data_folder" in settings:
        merged["data_folder"] = str(hparams_file.parent.resolve())
    if "checkpointer" in settings:
        merged["checkpointer"] = None
    merged.update(overrides or {})
    quiet_torchvision_note()
    # The recipe files seed torch's global generator; keep the caller's stream.
    with torch.random.fork_rng(devices=[]):
        return load_hyperpyyaml(text, merged)


def load_model(hparams_file, overrides=None):
    """The (untrained) ``separator`` of a recipe's hparams file."""
    return load_hparams(hparams_file, overrides)["separator"]


def report_path(input_path, out_dir=None):
    """``<out_dir>/<input stem>_sources.json``, beside the outputs of :func:`output_paths`.

    >>> str(report_path("rec/talk.flac", "out"))
    'out/talk_sources.json'
    """
    input_path = Path(input_path)
    folder = Path(out_dir) if out_dir is not None else input_path.parent
    return folder / f"{input_path.stem}_sources.json"


def save_report(report, input_path, paths, path):
    """Writes ``report`` (:attr:`Sources.report`) as JSON to ``path``, atomically.

    The ``outputs`` entry lists, per source, the file it was written to
    (``paths``, from :func:`output_paths`) and the model output it holds.
    """
    data = dict(report, input=str(input_path), outputs={
        name: {"file": Path(paths[name]).name, "model_output": index}
        for name, index in report["outputs"].items()})
    text = json.dumps(data, indent=2) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()


def _fit_length(signals, length):
    """``signals`` ``[S, t]`` cut or zero-padded to ``[S, length]``."""
    if signals.shape[-1] >= length:
        return signals[..., :length]
    return torch.nn.functional.pad(signals, (0, length - signals.shape[-1]))


def _device(device):
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but CUDA is not available here")
    return device
