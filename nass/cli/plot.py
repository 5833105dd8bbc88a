"""``nass plot``: spectrograms of a mixture and its separated outputs, stacked in one PNG.

Like Fig. 3 of the NASS paper: one panel per signal, the mixture on top, on a
common time axis and one colour scale (dB relative to the loudest bin of all
panels), so that what each output took from the mixture can be compared at
a glance. Panels are titled with the file names.

The figure is drawn on matplotlib's Agg canvas directly, without pyplot, so
it needs no display and leaves the caller's matplotlib backend alone. The PNG
never replaces one of the plotted files, nor any existing file without
``--overwrite``; outputs of another rate or length than the mixture (not
its outputs, or resampled) are plotted with a warning.

Example
-------
>>> import tempfile
>>> import numpy as np
>>> import soundfile as sf
>>> with tempfile.TemporaryDirectory() as tmp:
...     t = np.arange(8000) / 8000
...     sf.write(f"{tmp}/talk.wav", np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 90 * t), 8000)
...     sf.write(f"{tmp}/talk_spk1.wav", np.sin(2 * np.pi * 440 * t), 8000)
...     sf.write(f"{tmp}/talk_noise.wav", 0.1 * np.sin(2 * np.pi * 90 * t), 8000)
...     found = find_outputs(f"{tmp}/talk.wav")
...     png = plot_spectrograms([f"{tmp}/talk.wav", *found], f"{tmp}/talk.png")
...     [p.name for p in found], png.read_bytes()[:4]
(['talk_spk1.wav', 'talk_noise.wav'], b'\\x89PNG')
"""

from pathlib import Path

import numpy as np
import soundfile as sf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.signal import spectrogram

from nass.audio import AudioInputError, find_outputs, read_audio
from nass.files import atomic_path
from nass.cli import EXIT_FAILED, EXIT_OK, report

# 32 ms frames with 75 % overlap: the usual resolution for looking at speech.
FRAME_SECONDS = 0.032
# Colours span this many dB below the loudest bin; quieter bins are all dark.
DYNAMIC_RANGE_DB = 80.0


def plot_command(args):
    """``nass plot``: one PNG of the mixture's and its outputs' spectrograms."""
    mixture = Path(args.mixture)
    if not mixture.is_file():
        report(f"no such mixture file: {mixture}", command="plot")
        return EXIT_FAILED
    outputs = args.outputs or find_outputs(mixture, args.prefix)
    if not outputs:
        prefix = args.prefix or mixture.with_suffix("")
        report(f"no separated outputs found ({prefix}_spk*.wav, {prefix}_noise.wav); "
               f"give them as arguments or point --prefix at them", command="plot")
        return EXIT_FAILED
    missing = [str(p) for p in outputs if not Path(p).is_file()]
    if missing:
        report(f"no such file(s): {', '.join(missing)}", command="plot")
        return EXIT_FAILED
    out_png = Path(args.output) if args.output else mixture.with_name(f"{mixture.stem}_spectrograms.png")
    plotted = [mixture, *map(Path, outputs)]
    if any(out_png.resolve() == path.resolve() for path in plotted):
        report(f"-o {out_png} is one of the files to plot; name another PNG", command="plot")
        return EXIT_FAILED
    if out_png.exists() and not args.overwrite:
        option = f"-o {out_png}" if args.output else f"{out_png} (the default -o)"
        report(f"{option} already exists; use --overwrite to replace it, or -o to name another "
               f"PNG", command="plot")
        return EXIT_FAILED
    for warning in mismatches(mixture, outputs):
        report(warning, command="plot", level="warning")
    try:
        plot_spectrograms(plotted, out_png)
    except OSError as err:
        report(f"cannot write {out_png} ({err.strerror or err})", command="plot")
        return EXIT_FAILED
    except (RuntimeError, ValueError) as err:
        report(str(err), command="plot")
        return EXIT_FAILED
    print(f"nass plot: wrote {out_png}")
    return EXIT_OK


def mismatches(mixture, outputs):
    """A warning for each output whose rate or length differs from the mixture's (as
    ``nass separate`` writes them); unreadable files are left to the plot to name."""
    try:
        reference = sf.info(str(mixture))
    except (sf.LibsndfileError, RuntimeError):
        return []
    warnings = []
    for path in outputs:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError):
            continue
        if (info.samplerate, info.frames) != (reference.samplerate, reference.frames):
            warnings.append(
                f"{path} is {info.frames} samples at {info.samplerate} Hz but the mixture "
                f"{mixture} is {reference.frames} at {reference.samplerate} Hz: not separated "
                f"from it by nass separate? (plotted on the same time axis anyway)")
    return warnings


def plot_spectrograms(paths, out_png, titles=None):
    """Draws one spectrogram panel per audio file, stacked, into ``out_png``.

    Arguments
    ---------
    paths : sequence of str or Path
        The mixture first, then its outputs; multichannel files are averaged.
    out_png : str or Path
    titles : sequence of str, optional
        Panel titles; the file names by default.

    Returns
    -------
    Path
        ``out_png``.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("plot_spectrograms: no audio files to plot")
    titles = list(titles) if titles is not None else [p.name for p in paths]
    panels = [_spectrogram_db(path) for path in paths]
    loudest = max(float(db.max()) for _, _, db in panels)
    longest = max(duration for duration, _, _ in panels)

    fig = Figure(figsize=(10, 2.2 * len(panels) + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (duration, top_khz, db), title in zip(axes, panels, titles):
        # An image, not a mesh: its size is the figure's pixels whatever the length.
        image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                          extent=(0, duration, 0, top_khz),
                          vmin=loudest - DYNAMIC_RANGE_DB, vmax=loudest)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("kHz")
        ax.set_xlim(0, longest)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="dB", shrink=0.8)
    out_png = Path(out_png)
    # An explicit format: matplotlib would otherwise add ".png" to a name without it.
    with atomic_path(out_png) as partial:
        fig.savefig(partial, dpi=100, format="png")
    return out_png


def _spectrogram_db(path):
    """``(duration s, top frequency kHz, power dB [F, N])`` of a file, downmixed to mono."""
    try:
        waveform, sample_rate = read_audio(path)
    except AudioInputError as err:
        raise AudioInputError(f"{path}: {err}") from None
    duration = waveform.shape[1] / sample_rate
    signal = waveform.double().mean(dim=0).numpy()
    frame = max(16, round(FRAME_SECONDS * sample_rate))
    if signal.size < frame:
        signal = np.pad(signal, (0, frame - signal.size))
    _, _, power = spectrogram(signal, fs=sample_rate, window="hann", nperseg=frame,
                              noverlap=3 * frame // 4, mode="psd")
    return duration, sample_rate / 2000, 10 * np.log10(power + 1e-12)
