"""Audio files: reading and checking inputs, naming and writing outputs.

Everything in nass that reads a recording or writes separated audio goes
through here, so inputs are read one way (a WAV file cut short is read with
a warning saying how much is missing), outputs are named one way
(``<stem>_spk1.wav .. <stem>_noise.wav``, found again by :func:`find_outputs`)
and written one way: 32-bit float WAV, atomically (:mod:`nass.files`), with a
``<stem>_sources.json`` report beside them.

Example
-------
>>> import tempfile
>>> import torch
>>> with tempfile.TemporaryDirectory() as tmp:
...     paths = output_paths(f"{tmp}/talk.flac", ["spk1", "spk2", "noise"], out_dir=tmp)
...     save_sources({name: torch.full((800,), 0.1) for name in paths}, 8000, paths)
...     waveform, rate = read_audio(paths["spk2"])
...     [p.name for p in find_outputs(f"{tmp}/talk.flac")], tuple(waveform.shape), rate
(['talk_spk1.wav', 'talk_spk2.wav', 'talk_noise.wav'], (1, 800), 8000)
"""

import glob
import json
import os
import re
import secrets
import struct
import warnings
from collections import OrderedDict
from pathlib import Path

import soundfile as sf
import torch

from nass.files import atomic_path, write_text

# Peak of a normalised output: a little headroom.
NORMALIZED_PEAK = 0.9
# What an output's name adds to its input's stem: ``_spk<k>`` or ``_noise``.
SPEAKER_PREFIX, NOISE_NAME = "spk", "noise"


class AudioInputError(ValueError):
    """An input that cannot be separated: missing, unreadable, empty, too short, silent."""


class OutputPathError(OSError):
    """Outputs that cannot be written where asked, or that two inputs would share."""


class TruncatedAudioWarning(UserWarning):
    """A file that holds fewer samples than its header declares (a copy or a recording cut short)."""


def source_names(num_spks, noise_output):
    """``["spk1", .., "spkC"]``, then ``"noise"`` with a noise output.

    >>> source_names(2, True)
    ['spk1', 'spk2', 'noise']
    """
    names = [f"{SPEAKER_PREFIX}{k}" for k in range(1, num_spks + 1)]
    return names + ([NOISE_NAME] if noise_output else [])


def read_audio(path):
    """``(waveform [channels, T] float32, sample_rate)`` of any file soundfile reads.

    Raises :class:`AudioInputError` saying why the file cannot be used (the
    caller names the file). A WAV file shorter than its header says is read
    as far as it goes, with a :class:`TruncatedAudioWarning` naming it.
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
    declared = declared_wav_frames(path)
    if declared is not None and declared > data.shape[0]:
        warnings.warn(TruncatedAudioWarning(
            f"{path}: truncated: its header declares {declared} samples "
            f"({declared / sample_rate:.2f} s) but only {data.shape[0]} "
            f"({data.shape[0] / sample_rate:.2f} s) are in the file; using those"
        ), stacklevel=2)
    return torch.from_numpy(data.T.copy()), int(sample_rate)


def declared_wav_frames(path):
    """The number of frames a RIFF/WAVE file's header declares, or None.

    None for other formats, and for headers that declare no length (0 or
    0xFFFFFFFF, as streaming writers leave it). libsndfile reports the frames
    actually present, so comparing the two finds files cut short.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sf.write(f"{tmp}/a.wav", np.zeros(1000), 8000, subtype="PCM_16")
    ...     whole = Path(f"{tmp}/a.wav").read_bytes()
    ...     _ = Path(f"{tmp}/cut.wav").write_bytes(whole[:len(whole) - 600])
    ...     declared_wav_frames(f"{tmp}/cut.wav"), sf.info(f"{tmp}/cut.wav").frames
    (1000, 700)
    """
    with open(path, "rb") as fin:
        head = fin.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = fin.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = fin.read(size)
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack("<H", fmt[12:14])[0]
                fin.seek(size % 2, os.SEEK_CUR)
            elif chunk_id == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                fin.seek(size + size % 2, os.SEEK_CUR)


def output_paths(input_path, names, out_dir=None):
    """``{name: <out_dir>/<input stem>_<name>.wav}``; ``out_dir`` defaults to the input's folder.

    >>> {k: str(v) for k, v in output_paths("rec/talk.flac", ["spk1", "noise"], "out").items()}
    {'spk1': 'out/talk_spk1.wav', 'noise': 'out/talk_noise.wav'}
    """
    input_path = Path(input_path)
    folder = Path(out_dir) if out_dir is not None else input_path.parent
    return OrderedDict((name, folder / f"{input_path.stem}_{name}.wav") for name in names)


def plan_outputs(inputs, names, out_dir=None):
    """``{input: output_paths(input)}`` for a run, refusing inputs that would share an output.

    ``d1/talk.wav`` and ``d2/talk.wav`` into one ``out_dir``, or ``a.wav`` and
    ``a.flac`` beside each other, would overwrite each other's outputs; an
    input given twice would overwrite its own.

    >>> plan_outputs(["d1/talk.wav", "d2/talk.wav"], ["spk1"], out_dir="out")
    Traceback (most recent call last):
    ...
    nass.audio.OutputPathError: d1/talk.wav and d2/talk.wav would both be written to out/talk_spk1.wav, ...; rename one, or separate them into different --out-dir folders
    """
    plan, owners = OrderedDict(), {}
    given = {os.path.abspath(path): path for path in inputs}
    for path in inputs:
        paths = output_paths(path, names, out_dir)
        for output in paths.values():
            if os.path.abspath(output) in given:
                raise OutputPathError(
                    f"{path} would be separated into {output}, which is an input of this run; "
                    f"write the outputs elsewhere with --out-dir"
                )
        first = os.path.abspath(next(iter(paths.values())))
        if first in owners:
            other = owners[first]
            raise OutputPathError(
                f"{path} is given twice" if os.path.abspath(other) == os.path.abspath(path) else
                f"{other} and {path} would both be written to {next(iter(paths.values()))}, ...; "
                f"rename one, or separate them into different --out-dir folders"
            )
        owners[first] = path
        plan[path] = paths
    return plan


def check_out_dir(out_dir):
    """Creates ``out_dir`` if needed and checks that files can be written there.

    Raises :class:`OutputPathError` saying why not (a file in the way, a
    folder that cannot be created, no permission to write).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputPathError(f"--out-dir {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".nass-write-test.{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputPathError(
            f"--out-dir {out_dir} cannot be written to ({err.strerror or err})"
        ) from None


def find_outputs(mixture, prefix=None):
    """The separated outputs of ``mixture``: ``<prefix>_spk1.wav, .., <prefix>_noise.wav``.

    The names :func:`output_paths` gives; ``prefix`` defaults to the
    mixture's path without its extension (outputs beside the input), and may
    point elsewhere (``out/talk`` for ``nass separate --out-dir out talk.wav``).
    Speakers come in numerical order, the noise last.
    """
    prefix = Path(prefix) if prefix is not None else Path(mixture).with_suffix("")
    start = f"{prefix.name}_{SPEAKER_PREFIX}"
    pattern = re.compile(re.escape(start) + r"(\d+)\.wav$")
    # Only this prefix's files are listed: a folder of many inputs' outputs is not read whole per input.
    speakers = sorted(
        (int(match.group(1)), path)
        for path in prefix.parent.glob(glob.escape(start) + "*.wav")
        if (match := pattern.match(path.name))
    )
    noise = output_paths(prefix, [NOISE_NAME], prefix.parent)[NOISE_NAME]
    return [path for _, path in speakers] + ([noise] if noise.is_file() else [])


def save_sources(sources, sample_rate, paths, overwrite=False, normalize=False):
    """Writes each source to its path as 32-bit float WAV, atomically.

    Arguments
    ---------
    sources : dict
        ``{name: [T] tensor}``, e.g. from :meth:`nass.inference.Separator.separate_tensor`.
    sample_rate : int
    paths : dict
        ``{name: Path}``, e.g. from :func:`output_paths`.
    overwrite : bool
        Replace existing files; otherwise an existing file raises FileExistsError
        before anything is written.
    normalize : bool
        Scale each source to a peak of :data:`NORMALIZED_PEAK` (for
        listening); otherwise the model's values are written unchanged.
    """
    if not overwrite:
        existing = [str(p) for p in paths.values() if Path(p).exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} already exist(s); use overwrite to replace")
    for name, signal in sources.items():
        write_wav(paths[name], signal, sample_rate, normalize=normalize)


def write_wav(path, signal, sample_rate, normalize=False):
    """Writes a ``[T]`` signal to ``path`` as 32-bit float WAV, atomically.

    The file is written to ``.<name>.<random>.part`` in the same folder and
    renamed over ``path``; parts of ``path`` left by a killed run go first.
    ``normalize`` scales the signal to a peak of :data:`NORMALIZED_PEAK`.
    """
    values = torch.as_tensor(signal).detach().cpu().float()
    peak = values.abs().max() if values.numel() else 0
    if normalize and peak > 0:
        values = values * (NORMALIZED_PEAK / peak)
    with atomic_path(path) as partial:
        sf.write(str(partial), values.numpy(), sample_rate, subtype="FLOAT", format="WAV")


def report_path(input_path, out_dir=None):
    """``<out_dir>/<input stem>_sources.json``, beside the outputs of :func:`output_paths`.

    >>> str(report_path("rec/talk.flac", "out"))
    'out/talk_sources.json'
    """
    input_path = Path(input_path)
    folder = Path(out_dir) if out_dir is not None else input_path.parent
    return folder / f"{input_path.stem}_sources.json"


def save_report(report, input_path, paths, path):
    """Writes ``report`` (:attr:`nass.inference.Sources.report`) as JSON to ``path``, atomically.

    The ``outputs`` entry lists, per source, the file it was written to
    (``paths``, from :func:`output_paths`) and the model output it holds.
    """
    data = dict(report, input=str(input_path), outputs={
        name: {"file": Path(paths[name]).name, "model_output": index}
        for name, index in report["outputs"].items()})
    write_text(path, json.dumps(data, indent=2) + "\n")


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


def to_mono(waveform):
    """A ``[T]`` or ``[channels, T]`` float waveform as checked mono ``[T]`` (channels averaged)."""
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


def check_sample_rate(sample_rate):
    """``sample_rate`` as an int; TypeError for a non-number, AudioInputError for a bad value."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise TypeError(f"sample_rate must be a number of Hz, got {sample_rate!r}")
    if sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise AudioInputError(
            f"sample rate must be a positive whole number of Hz, got {sample_rate}")
    return int(sample_rate)
