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

Which output is the noise: a model trained with ``noise_assignment: fixed``
has it last. One trained with ``pit`` (the release) may put it on any output,
so :func:`pick_noise` takes the output that is least like speech by
:func:`speech_likeness`: how much spectral structure (harmonics, formants)
each frame has once the signal's average colour is removed; noise, steady or
bursty, has next to none.

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

import logging
import math
import os
import re
import secrets
from collections import OrderedDict
from pathlib import Path

import soundfile as sf
import torch
import torchaudio
import yaml
from hyperpyyaml import load_hyperpyyaml

from nass.checkpoints import best_checkpoint, check_fit, load_state
from nass.chunking import DEFAULT_OVERLAP, separate_in_chunks

logger = logging.getLogger(__name__)

# Measured with the release-size Sepformer (random weights) on a 2-core CPU,
# one thread: a window's memory grows by 65-75 MB per second of audio (+0.6 GB
# at 8 s, +2.1 GB at 32 s) and its CPU time per second of audio from 1.8-2.2 s
# (up to 8 s) to 3.2 s (32 s). 30 s keeps a 10-minute recording well under
# 4 GB while separating the test mixtures of LibriMix and WHAM! (almost all
# shorter) in one pass, i.e. exactly as the recipe's evaluation and the
# reference implementation do; use shorter windows (8 s) for speed.
DEFAULT_CHUNK_SECONDS = 30.0
# Peak of a normalised output: a little headroom, as the recipe's saved audio.
NORMALIZED_PEAK = 0.9
# speech_likeness frames: 64 ms resolve the harmonics of low voices (16 Hz bins).
FRAME_SECONDS = 0.064
# Power floor relative to a signal's mean power (-60 dB): keeps the logs of
# digital silence finite.
POWER_FLOOR = 1e-6


class AudioInputError(ValueError):
    """An input that cannot be separated: missing, unreadable, empty, too short, silent."""


def read_audio(path):
    """``(waveform [channels, T] float32, sample_rate)`` of any file soundfile reads.

    Raises :class:`AudioInputError` saying why the file cannot be used (the
    caller names the file).
    """
    path = Path(path)
    if not path.exists():
        raise AudioInputError("no such file")
    if not path.is_file():
        raise AudioInputError("not a file")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioInputError(f"cannot be read as audio ({err})") from None
    if data.shape[0] == 0:
        raise AudioInputError("empty (no samples)")
    return torch.from_numpy(data.T.copy()), int(sample_rate)


def speech_likeness(signal, sample_rate):
    """How far the spectrum of each frame is from flat, once the signal's own colour is removed.

    The power spectrogram ``P[f, t]`` (64 ms Hann frames, 32 ms hop) is
    whitened by the signal's average spectrum, ``W = P / mean_t P``, and each
    frame scores ``log(mean_f W) - mean_f log(W)``, the log-ratio of the
    arithmetic to the geometric mean of its bins (0 for a flat frame); the
    result is the mean over frames. Noise of any colour, steady or bursty,
    whitens to bins of exponentially distributed power in every frame, which
    scores Euler's constant (about 0.58); speech, whose harmonics, formants
    and voicing change from frame to frame (and music), scores well above 1.

    Chosen by measuring the project's real recordings (read speech, musical
    tones, two real noises; also with the sources leaking into each other at
    -3 dB) and 100 synthetic mixtures (:mod:`nass.data.synthetic`), where it
    scored every noise lowest with at least 15 % to spare. Syllable-rate
    (2-8 Hz) modulation misses steady tones; how far each frequency band is
    from stationary over time is fooled by noise bursts (6-11 % of the
    synthetic mixtures wrong); 32 ms frames cannot resolve the harmonics of
    low voices.

    Arguments
    ---------
    signal : torch.Tensor
        ``[T]``.
    sample_rate : int

    Returns
    -------
    float

    Example
    -------
    Noise scores about 0.58, bursty or not; a voice gliding in pitch (its
    harmonics move from frame to frame) scores far higher:

    >>> g = torch.Generator().manual_seed(0)
    >>> noise = torch.randn(16000, generator=g)
    >>> bursts = noise * (torch.arange(16000) // 1600 % 2)            # on 0.2 s, off 0.2 s
    >>> t = torch.arange(16000) / 8000
    >>> f0 = 150 + 30 * torch.sin(2 * torch.pi * 1.5 * t)              # intonation, Hz
    >>> phase = 2 * torch.pi * torch.cumsum(f0, dim=0) / 8000
    >>> voice = sum(torch.sin(k * phase) / k for k in range(1, 20))   # 19 harmonics
    >>> [round(speech_likeness(x, 8000), 1) for x in (noise, bursts, voice)]
    [0.6, 0.4, 3.0]
    """
    frame = max(2, round(FRAME_SECONDS * sample_rate))
    # float32 and in-place steps: a long recording's spectrogram is the largest
    # thing held here, about 4 bytes per sample.
    power = torch.stft(
        signal.float(), n_fft=frame, hop_length=frame // 2, window=torch.hann_window(frame),
        center=True, pad_mode="constant", return_complex=True,
    ).abs().pow_(2)
    power += POWER_FLOOR * power.mean() + torch.finfo(power.dtype).tiny
    power /= power.mean(dim=1, keepdim=True)
    per_frame = power.mean(dim=0).log() - power.log_().mean(dim=0)
    return float(per_frame.double().mean())


def pick_noise(outputs, sample_rate):
    """Index of the output ``[T, S]`` least like speech (see :func:`speech_likeness`).

    >>> t = torch.arange(16000) / 8000
    >>> noise = torch.randn(16000, generator=torch.Generator().manual_seed(1))
    >>> def voice(f0):                                   # a gliding pitch, 19 harmonics
    ...     phase = 2 * torch.pi * torch.cumsum(f0 + 0.2 * f0 * torch.sin(3 * t), dim=0) / 8000
    ...     return sum(torch.sin(k * phase) / k for k in range(1, 20))
    >>> pick_noise(torch.stack([voice(110), noise, voice(190)], dim=-1), 8000)
    1
    """
    scores = [speech_likeness(outputs[:, k], sample_rate) for k in range(outputs.shape[-1])]
    return min(range(len(scores)), key=scores.__getitem__)


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
        ``"fixed"``: the last output is the noise; ``"pit"``: :func:`pick_noise` finds it.
    chunk_seconds : float, optional
        Window length for long inputs (:mod:`nass.chunking`);
        :data:`DEFAULT_CHUNK_SECONDS` when None, ``math.inf`` for one pass.
    device : str or torch.device
        Where the model runs; inputs and outputs stay on the CPU.
    checkpoint : Path, optional
        The checkpoint the weights came from (kept as ``self.checkpoint``).
    progress : bool
        Show a progress bar over the windows of long inputs.
    """

    def __init__(self, model, sample_rate, noise_assignment="pit", chunk_seconds=None,
                 device="cpu", checkpoint=None, progress=False):
        if noise_assignment not in ("pit", "fixed"):
            raise ValueError(f"noise_assignment must be 'pit' or 'fixed', got {noise_assignment!r}")
        self.device = _device(device)
        self.model = model.to(self.device).eval()
        self.sample_rate = int(sample_rate)
        self.noise_assignment = noise_assignment
        self.checkpoint = checkpoint
        self.progress = progress
        self.chunk_seconds = DEFAULT_CHUNK_SECONDS if chunk_seconds is None else float(chunk_seconds)
        self.chunk_size = self._chunk_size(self.chunk_seconds)

    @classmethod
    def from_hparams(cls, hparams_file, checkpoint, overrides=None, device="cpu",
                     chunk_seconds=None, progress=False):
        """Builds the model of a recipe's hparams file and loads a checkpoint's weights.

        Arguments
        ---------
        hparams_file : str or Path
            E.g. ``recipes/LibriMix/separation/hparams/sepformer-libri2mix.yaml``;
            its ``separator``, ``sample_rate`` and ``noise_assignment`` are used.
        checkpoint : str or Path
            A ``CKPT+...`` folder, or a ``save/`` folder holding several: the
            one of lowest ``si-snr`` is used (logged, and kept as ``.checkpoint``).
        overrides : dict or str, optional
            HyperPyYAML overrides, as on the recipe's command line
            (``{"num_spks": 3}``); they must describe the trained model.
        device, chunk_seconds, progress
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
        ckpt = best_checkpoint(checkpoint)
        logger.info("Separating with checkpoint %s", ckpt)
        hparams = load_hparams(hparams_file, overrides)
        model = hparams["separator"]
        modules = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
        check_fit(modules, ckpt, hparams_name=str(hparams_file))
        for name, module in modules.items():
            module.load_state_dict(load_state(ckpt / f"{name}.ckpt"), strict=True)
        return cls(model, hparams["sample_rate"], hparams.get("noise_assignment", "pit"),
                   chunk_seconds=chunk_seconds, device=device, checkpoint=ckpt, progress=progress)

    @classmethod
    def from_pretrained(cls, folder, device="cpu", chunk_seconds=None, progress=False):
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
                   progress=progress)

    @classmethod
    def from_onnx(cls, path, chunk_seconds=None, progress=False):
        """Runs a model written by ``nass export --format onnx`` with ONNX Runtime (CPU).

        The windows and the labelling of the outputs are those of the
        PyTorch model (:class:`nass.onnx_export.OnnxSeparator`).
        """
        from nass.onnx_export import OnnxSeparator

        model = OnnxSeparator(path)
        return cls(model, model.sample_rate, model.noise_assignment, chunk_seconds=chunk_seconds,
                   checkpoint=Path(path), progress=progress)

    @property
    def source_names(self):
        """``["spk1", .., "spkC"]``, then ``"noise"`` when the model has a noise output."""
        names = [f"spk{k}" for k in range(1, self.model.num_spks + 1)]
        return names + (["noise"] if self.model.noise_output else [])

    def separate_file(self, path):
        """Separates an audio file; the sources are at the file's sample rate and length.

        Raises :class:`AudioInputError`, naming the file, for a missing,
        unreadable, empty, silent or too short file.
        """
        try:
            return self.separate_tensor(*read_audio(path))
        except AudioInputError as err:
            raise AudioInputError(f"{path}: {err}") from None

    # no_grad, not inference_mode: tensors made here may be cached (the PIT
    # permutations of the window matching) and later used by training.
    @torch.no_grad()
    def separate_tensor(self, waveform, sample_rate):
        """Separates ``waveform`` (``[T]`` or ``[channels, T]``) recorded at ``sample_rate``.

        Returns
        -------
        collections.OrderedDict
            ``{"spk1": [T], .., "noise": [T]}`` float32 CPU tensors at
            ``sample_rate``, as long as the input.
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
            fixed_noise = self.model.noise_output and self.noise_assignment == "fixed"
            outputs = separate_in_chunks(self._run_model, resampled[None], self.chunk_size,
                                         fixed_last=fixed_noise, progress=self.progress)[0]
        outputs = outputs[:, self._output_order(outputs)]
        back = self._resample(outputs.T.contiguous(), self.sample_rate, sample_rate)
        back = _fit_length(back, mono.shape[-1])
        return OrderedDict(zip(self.source_names, back.float().unbind(0)))

    def _run_model(self, mixture):
        return self.model(mixture.to(self.device)).float().cpu()

    def _output_order(self, outputs):
        """Output indices in the order speakers, then noise."""
        n_out = outputs.shape[-1]
        if not self.model.noise_output:
            return list(range(n_out))
        noise = n_out - 1 if self.noise_assignment == "fixed" else pick_noise(outputs, self.sample_rate)
        return [k for k in range(n_out) if k != noise] + [noise]

    def _chunk_size(self, chunk_seconds):
        if not chunk_seconds > 0:
            raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
        if math.isinf(chunk_seconds):
            return None
        size = round(chunk_seconds * self.sample_rate)
        # Every window, the last included, is longer than the overlap, and
        # must be at least one encoder kernel long.
        if round(size * DEFAULT_OVERLAP) < self.model.kernel_size:
            shortest = math.ceil(self.model.kernel_size / DEFAULT_OVERLAP) / self.sample_rate
            raise ValueError(f"chunk_seconds must be at least {shortest:.4f} s, got {chunk_seconds}")
        return size

    @staticmethod
    def _mono(waveform):
        if waveform.dim() == 2:
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
    Overrides must name top-level settings of the file.
    """
    hparams_file = Path(hparams_file)
    if not hparams_file.is_file():
        raise FileNotFoundError(f"no hparams file {hparams_file}")
    text = hparams_file.read_text(encoding="utf-8")
    settings = set(re.findall(r"^([A-Za-z_]\w*)\s*:", text, flags=re.MULTILINE))
    if isinstance(overrides, str):
        overrides = yaml.safe_load(overrides) or {}
    unknown = sorted(set(overrides or {}) - settings)
    if unknown:
        raise ValueError(f"{hparams_file} has no setting(s) {', '.join(unknown)} to override")
    merged = {}
    if "data_folder" in settings:
        merged["data_folder"] = str(hparams_file.parent.resolve())
    if "checkpointer" in settings:
        merged["checkpointer"] = None
    merged.update(overrides or {})
    # The recipe files seed torch's global generator; keep the caller's stream.
    with torch.random.fork_rng(devices=[]):
        return load_hyperpyyaml(text, merged)


def load_model(hparams_file, overrides=None):
    """The (untrained) ``separator`` of a recipe's hparams file."""
    return load_hparams(hparams_file, overrides)["separator"]


def output_paths(input_path, source_names, out_dir=None):
    """``{name: <out_dir>/<input stem>_<name>.wav}``; ``out_dir`` defaults to the input's folder.

    >>> {k: str(v) for k, v in output_paths("rec/talk.flac", ["spk1", "noise"], "out").items()}
    {'spk1': 'out/talk_spk1.wav', 'noise': 'out/talk_noise.wav'}
    """
    input_path = Path(input_path)
    folder = Path(out_dir) if out_dir is not None else input_path.parent
    return OrderedDict((name, folder / f"{input_path.stem}_{name}.wav") for name in source_names)


def save_sources(sources, sample_rate, paths, overwrite=False, normalize=False):
    """Writes each source to its path as 32-bit float WAV, atomically.

    Each file is written to a temporary name in the same folder, then renamed
    over the final name, so a reader never sees a half-written file and an
    interrupted run leaves no truncated output.

    Arguments
    ---------
    sources : dict
        ``{name: [T] tensor}``, e.g. from :meth:`Separator.separate_tensor`.
    sample_rate : int
    paths : dict
        ``{name: Path}``, e.g. from :func:`output_paths`.
    overwrite : bool
        Replace existing files; otherwise an existing file raises FileExistsError.
    normalize : bool
        Scale each source to a peak of :data:`NORMALIZED_PEAK` (for
        listening); otherwise the model's values are written unchanged.
    """
    if not overwrite:
        existing = [str(p) for p in paths.values() if Path(p).exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} already exist(s); use overwrite to replace")
    for name, signal in sources.items():
        values = signal.detach().cpu().float()
        peak = values.abs().max()
        if normalize and peak > 0:
            values = values * (NORMALIZED_PEAK / peak)
        _write_atomically(Path(paths[name]), values.numpy(), sample_rate)


def _write_atomically(path, values, sample_rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        sf.write(str(partial), values, sample_rate, subtype="FLOAT", format="WAV")
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
