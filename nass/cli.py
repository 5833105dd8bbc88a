"""The ``nass`` command line: ``nass separate``, ``nass export``, ``nass plot`` and ``nass demo``.

``nass separate --hparams H.yaml --checkpoint CKPT INPUT...`` writes, for each
``x.wav``, ``x_spk1.wav .. x_spkC.wav`` and ``x_noise.wav`` (when the model
has a noise output) beside it or into ``--out-dir``: 32-bit float WAV at the
input's sample rate and length, holding the model's values unchanged unless
``--normalize``, and ``x_sources.json``: which model output each file holds,
how the noise output was chosen and its scores (see
:class:`nass.inference.Sources`), and the checkpoint. When the choice of the
noise output is close, one line on stderr names the input; ``--noise-output
K`` makes model output ``K`` the noise instead. ``--precision bf16`` (or
``fp16`` on CUDA and CPUs with native fp16) runs the mask network in half precision
(:mod:`nass.precision`); the default is fp32. Options it does not know,
like ``--num_spks 3``, are HyperPyYAML overrides of the hparams file, as on
a recipe's command line; they must describe the trained model, and options
that do not shape the model (training options such as ``--lr`` or
``--batch_size``) are refused (:func:`nass.overrides.check_overrides`).
``--hparams`` may also be the ``hyperparams.yaml`` a training run saved in
its output folder, which holds the run's settings (overrides are then
refused). ``--checkpoint DIR`` alone takes a SpeechBrain pretrained-model
folder (``nass export``'s, or a SpeechBrain hub model's;
:mod:`nass.pretrained`), ``--onnx MODEL.onnx`` a model written by ``nass
export --format onnx``, run by ONNX Runtime.

``nass export --hparams H.yaml --checkpoint CKPT --out-dir DIR`` writes the
model as a SpeechBrain pretrained-model folder (:mod:`nass.export`);
``--format onnx`` writes ``DIR/separator.onnx`` instead.

Before anything is separated, the run is refused (exit status 1) if the
model cannot be loaded, if ``--out-dir`` cannot be written to, or if two
inputs would write the same output (``d1/talk.wav`` and ``d2/talk.wav`` into
one ``--out-dir``, ``talk.wav`` beside ``talk.flac``) or an output would
replace an input. After that, an input that cannot be separated (missing,
unreadable, empty, shorter than the encoder's kernel, all zero, or whose
outputs exist without ``--overwrite``) gets one line on stderr naming it
and the reason; the others are still separated, and the exit status is 1
if any failed. A WAV file cut short is separated as far as it goes, with a
warning saying how much of it is missing.

``nass plot MIX.wav [OUTPUT.wav ...] -o fig.png`` stacks the spectrograms of
a mixture and its outputs (found beside it, or by ``--prefix``, when none
are given). ``nass demo`` trains, evaluates and uses a small model on data
shipped with the package (:mod:`nass.demo`; imported only when run, as it
brings in the training stack).

Errors are one line without a traceback; set ``NASS_DEBUG=1`` to see it.

Example
-------
>>> main(["separate", "--hparams", "no/such.yaml", "--checkpoint", "no/ckpt", "x.wav"])
1
"""

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

import yaml
from tqdm import tqdm

from nass.audio import (
    AudioInputError,
    OutputPathError,
    TruncatedAudioWarning,
    check_out_dir,
    find_outputs,
    plan_outputs,
    read_audio,
    save_sources,
)
from nass.chunking import DEFAULT_OVERLAP
from nass.export import ONNX_FILE, ExportError, export_onnx_file, export_pretrained
from nass.inference import (DEFAULT_CHUNK_SECONDS, MemoryBudgetError, Separator, report_path,
                            save_report)
from nass.logs import quiet_torchvision_note
from nass.precision import precision_dtype

# argparse itself exits with 2 on usage errors.
EXIT_OK, EXIT_FAILED = 0, 1


def main(argv=None):
    """Runs ``nass`` with ``argv`` (``sys.argv[1:]`` by default); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_torchvision_note()
    parser, known_options = _parser()
    overrides = {}
    if argv[:1] in (["separate"], ["export"]):
        try:
            rest, overrides = split_overrides(argv[1:], known_options[argv[0]])
        except ValueError as err:
            parser.error(str(err))
        argv = argv[:1] + rest
    args = parser.parse_args(argv)
    if args.command == "separate":
        return separate_command(args, overrides)
    if args.command == "export":
        return export_command(args, overrides)
    if args.command == "plot":
        return plot_command(args)
    return demo_command(args)


def split_overrides(tokens, known_options):
    """Splits hparams overrides (options not in ``known_options``) from the rest.

    ``--key value`` and ``--key=value`` become ``{"key": value}`` with the
    value read as YAML (``3`` is an int, ``False`` a bool); everything after
    ``--`` is left alone.

    >>> split_overrides(["a.wav", "--num_spks", "3", "--out-dir", "o", "--noisy=False"],
    ...                 {"--out-dir"})
    (['a.wav', '--out-dir', 'o'], {'num_spks': 3, 'noisy': False})
    """
    rest, overrides = [], {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--":
            rest.extend(tokens[index:])
            break
        name, has_value, value = token.partition("=")
        if not token.startswith("--") or name in known_options:
            rest.append(token)
            index += 1
            continue
        if not has_value:
            if index + 1 >= len(tokens):
                raise ValueError(f"hparams override {name} needs a value")
            value = tokens[index + 1]
            index += 1
        try:
            overrides[name[2:]] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"hparams override {name}: cannot read {value!r} as YAML ({err})") from None
        index += 1
    return rest, overrides


def separate_command(args, overrides):
    """``nass separate``: separates every input, reports failures, returns the exit status."""
    try:
        precision_dtype(args.precision, args.device)
    except ValueError as err:
        _error(f"--precision {args.precision}: {err}")
        return EXIT_FAILED
    try:
        with window_note_unlogged():
            separator = load_separator(args, overrides, chunk_seconds=args.chunk_seconds,
                                       progress=sys.stderr.isatty(), max_memory=args.max_memory)
    except MemoryBudgetError as err:
        _error(str(err))
        return EXIT_FAILED
    except Exception as err:  # any failure to build or load the model is one message, not a trace
        _error(f"cannot load the model: {err}")
        return EXIT_FAILED
    try:
        plan = plan_outputs(args.inputs, separator.source_names, args.out_dir)
        if args.out_dir is not None:
            check_out_dir(args.out_dir)
    except OutputPathError as err:
        _error(f"{err}; nothing was separated")
        return EXIT_FAILED
    what = "ONNX model" if getattr(args, "onnx", None) else "checkpoint"
    print(f"nass separate: using {what} {separator.checkpoint}")
    if separator.window_note:
        _error(separator.window_note, level="note")
    if args.noise_output is not None:
        n_out = len(separator.source_names)
        if not separator.outputs.noise_output:
            _error("--noise-output: the model has no noise output")
            return EXIT_FAILED
        if not 0 <= args.noise_output < n_out:
            _error(f"--noise-output must be a model output from 0 to {n_out - 1}, "
                   f"got {args.noise_output}")
            return EXIT_FAILED
    failed = 0
    for path, paths in tqdm(plan.items(), disable=None, unit="file", desc="files"):
        sidecar = report_path(path, args.out_dir)
        try:
            existing = [p.name for p in [*paths.values(), sidecar] if p.exists()]
            if existing and not args.overwrite:
                verb = "exists" if len(existing) == 1 else "exist"
                raise FileExistsError(
                    f"{', '.join(existing)} already {verb} from before this run "
                    f"(use --overwrite to replace)"
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", TruncatedAudioWarning)
                waveform, sample_rate = read_audio(path)
            for warning in caught:
                _error(str(warning.message), level="warning")
            sources = separator.separate_tensor(waveform, sample_rate,
                                                noise_output=args.noise_output)
            save_sources(sources, sample_rate, paths, overwrite=args.overwrite,
                         normalize=args.normalize)
            save_report(sources.report, path, paths, sidecar)
        except (AudioInputError, OSError, RuntimeError) as err:
            failed += 1
            _error(f"{path}: {err}")
        else:
            if sources.report["close"]:
                noise = sources.report["outputs"]["noise"]
                scores = ", ".join(f"{v:.2f}" for v in sources.report["noise_scores"])
                _error(f"{path}: close call which output is the noise: model output {noise} "
                       f"was taken (one-voice scores {scores}; see {sidecar}); to choose "
                       f"another, rerun with --noise-output K --overwrite", level="warning")
            tqdm.write(f"{path} -> {', '.join(str(p) for p in paths.values())}")
    if failed:
        _error(f"{failed} of {len(args.inputs)} input(s) failed")
        return EXIT_FAILED
    return EXIT_OK


@contextlib.contextmanager
def window_note_unlogged():
    """Drops the Separator's log record of its window note: the command prints it once, itself."""
    inference_logger = logging.getLogger("nass.inference")

    def keep(record):
        return not getattr(record, "window_note", False)

    inference_logger.addFilter(keep)
    try:
        yield
    finally:
        inference_logger.removeFilter(keep)


def load_separator(args, overrides, **options):
    """The :class:`Separator` that ``--onnx``, ``--checkpoint`` and ``--hparams`` name."""
    device = getattr(args, "device", "cpu")
    precision = getattr(args, "precision", "fp32")
    if getattr(args, "onnx", None):
        if args.hparams or args.checkpoint or overrides:
            raise ValueError("--onnx takes the model from the ONNX file alone: leave out "
                             "--hparams, --checkpoint and hparams overrides")
        if precision != "fp32" or device != "cpu":
            raise ValueError("--onnx runs in fp32 on the CPU: leave out --precision and --device")
        if options.pop("max_memory", None) is not None:
            raise ValueError("--max-memory: the memory of ONNX Runtime is not estimated; leave "
                             "out --max-memory with --onnx")
        return Separator.from_onnx(args.onnx, **options)
    if args.checkpoint is None:
        raise ValueError("give --checkpoint (with --hparams for a recipe checkpoint) or --onnx")
    if args.hparams is None:
        if overrides:
            raise ValueError(f"hparams overrides ({', '.join('--' + k for k in overrides)}) "
                             f"need --hparams; a pretrained-model folder describes itself")
        return Separator.from_pretrained(args.checkpoint, device=device, precision=precision,
                                         **options)
    return Separator.from_hparams(args.hparams, args.checkpoint, overrides=overrides,
                                  device=device, precision=precision, **options)


def export_command(args, overrides):
    """``nass export``: a SpeechBrain pretrained-model folder, or an ONNX file."""
    try:
        if args.format == "onnx":
            separator = load_separator(args, overrides)
            report = export_onnx_file(separator, args.out_dir, args.window_seconds,
                                      overwrite=args.overwrite)
            checked = ", ".join(f"{n} samples {db:.1f} dB" for n, db in
                                zip(report["lengths"], report["min_sdr_db"]))
            print(f"nass export: wrote {report['path']} (ONNX Runtime vs PyTorch, worst "
                  f"output: {checked})")
        else:
            if args.hparams is None:
                raise ValueError("--format speechbrain needs --hparams, the recipe file the "
                                 "checkpoint was trained with")
            out = export_pretrained(args.hparams, args.checkpoint, args.out_dir, overrides,
                                    overwrite=args.overwrite, test_results=args.test_results)
            print(f"nass export: wrote {out} (SpeechBrain's SepformerSeparation loads it)")
    except ExportError as err:
        _error(str(err), command="export")
        return EXIT_FAILED
    except Exception as err:  # a model that cannot be loaded or exported: one message
        _error(f"{type(err).__name__}: {err}", command="export")
        return EXIT_FAILED
    return EXIT_OK


def plot_command(args):
    """``nass plot``: one PNG of the mixture's and its outputs' spectrograms."""
    mixture = Path(args.mixture)
    if not mixture.is_file():
        _error(f"no such mixture file: {mixture}", command="plot")
        return EXIT_FAILED
    outputs = args.outputs or find_outputs(mixture, args.prefix)
    if not outputs:
        prefix = args.prefix or mixture.with_suffix("")
        _error(f"no separated outputs found ({prefix}_spk*.wav, {prefix}_noise.wav); "
               f"give them as arguments or point --prefix at them", command="plot")
        return EXIT_FAILED
    missing = [str(p) for p in outputs if not Path(p).is_file()]
    if missing:
        _error(f"no such file(s): {', '.join(missing)}", command="plot")
        return EXIT_FAILED
    out_png = Path(args.output) if args.output else mixture.with_name(f"{mixture.stem}_spectrograms.png")
    from nass.plot import plot_spectrograms  # matplotlib: only when plotting

    try:
        plot_spectrograms([mixture, *outputs], out_png)
    except (OSError, RuntimeError, ValueError) as err:
        _error(str(err), command="plot")
        return EXIT_FAILED
    print(f"nass plot: wrote {out_png}")
    return EXIT_OK


def demo_command(args):
    """``nass demo``: the whole pipeline on shipped data (see :mod:`nass.demo`)."""
    from nass.demo import DemoError, run_demo  # the training stack: only for the demo

    try:
        run_demo(args.out_dir, minutes=args.minutes, seed=args.seed, epochs=args.epochs,
                 quick=args.quick)
    except DemoError as err:
        _error(str(err), command="demo")
        return EXIT_FAILED
    return EXIT_OK


def _error(message, command="separate", level="error"):
    tqdm.write(f"nass {command}: {level}: {message}", file=sys.stderr)
    if level == "error" and os.environ.get("NASS_DEBUG") and sys.exc_info()[0] is not None:
        traceback.print_exc()


def _parser():
    """The argument parser, and ``{command: option strings}`` of the commands taking overrides."""
    parser = argparse.ArgumentParser(
        prog="nass", description="Noise-aware speech separation (NASS) on SpeechBrain.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    separate = commands.add_parser(
        "separate", allow_abbrev=False,
        help="separate recordings into speakers and noise",
        description="Separate recordings into speakers (and noise) with a trained model. "
                    "Other --key value options are overrides of the hparams file, as for "
                    "the recipe (e.g. --num_spks 3); they must describe the trained model "
                    "(training options are refused).",
    )
    actions = [
        separate.add_argument("--hparams", metavar="HPARAMS.yaml",
                              help="the recipe hparams file the model was trained with, or "
                                   "the run's <output_folder>/hyperparams.yaml (not for a "
                                   "pretrained-model folder)"),
        separate.add_argument("--checkpoint", metavar="CKPT",
                              help="a CKPT+... folder, or a save/ folder holding several "
                                   "(the one of best validation SI-SNR is used); without "
                                   "--hparams, a SpeechBrain pretrained-model folder "
                                   "(nass export's, or a hub model's)"),
        separate.add_argument("--onnx", metavar="MODEL.onnx",
                              help="run a model written by nass export --format onnx with "
                                   "ONNX Runtime (CPU) instead"),
        separate.add_argument("--out-dir", metavar="DIR",
                              help="where to write the outputs (default: beside each input)"),
        separate.add_argument("--overwrite", action="store_true",
                              help="replace existing outputs"),
        separate.add_argument("--normalize", action="store_true",
                              help="peak-normalise each output (for listening; default: the "
                                   "model's values unchanged)"),
        separate.add_argument("--chunk-seconds", type=float, metavar="S",
                              help=f"separate longer inputs in windows of S seconds "
                                   f"overlapping by {DEFAULT_OVERLAP * 100:.0f}%% "
                                   f"(default {DEFAULT_CHUNK_SECONDS:g}; inf for one pass; "
                                   f"capped at the longest input the model can take and at "
                                   f"what --max-memory allows)"),
        separate.add_argument("--max-memory", type=float, metavar="GIB",
                              help="GiB the model's weights and one window may take (estimated "
                                   "from the model); longer windows are shortened to fit "
                                   "(default: the weights plus 80%% of the memory available: "
                                   "the system's, or the CUDA device's)"),
        separate.add_argument("--noise-output", type=int, metavar="K",
                              help="call model output K (0-based, as listed in "
                                   "<input>_sources.json) the noise, instead of the one "
                                   "identified"),
        separate.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)"),
        separate.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                              help="fp32: the exact model (default); bf16: the mask network's "
                                   "weights in bf16 (less memory; faster on CPUs with AMX and on "
                                   "GPUs), outputs about 40 dB SI-SNR from fp32's; fp16: the same "
                                   "in fp16 (closer to fp32 than bf16, smaller range), on CUDA "
                                   "and on CPUs with native fp16 matrix products (AVX512-FP16, "
                                   "AMX-FP16)"),
        separate.add_argument("inputs", nargs="+", metavar="INPUT",
                              help="audio files (any format soundfile reads; any sample rate; "
                                   "multichannel files are averaged to mono)"),
    ]
    known = {"separate": {"-h", "--help"}.union(*(a.option_strings for a in actions))}

    export = commands.add_parser(
        "export", allow_abbrev=False,
        help="write a trained model as a SpeechBrain pretrained-model folder, or as ONNX",
        description="Write a trained model as a SpeechBrain pretrained-model folder "
                    "(hyperparams.yaml, encoder/masknet/decoder.ckpt, README.md model card), "
                    "which SpeechBrain's SepformerSeparation.from_hparams(source=DIR) and "
                    f"nass separate --checkpoint DIR load; or as DIR/{ONNX_FILE} "
                    "(--format onnx). Other --key value options are overrides of the hparams "
                    "file.",
    )
    actions = [
        export.add_argument("--hparams", metavar="HPARAMS.yaml",
                            help="the recipe hparams file the model was trained with "
                                 "(--format onnx also takes a pretrained-model folder "
                                 "as --checkpoint without it)"),
        export.add_argument("--checkpoint", metavar="CKPT",
                            help="a CKPT+... folder, or a save/ folder (its best checkpoint)"),
        export.add_argument("--out-dir", required=True, metavar="DIR", help="the folder to write"),
        export.add_argument("--format", choices=["speechbrain", "onnx"], default="speechbrain",
                            help="speechbrain (default): a pretrained-model folder; onnx: "
                                 f"DIR/{ONNX_FILE}, checked with ONNX Runtime"),
        export.add_argument("--window-seconds", type=float, default=2.0, metavar="S",
                            help="onnx: the input length the graph is traced and checked with "
                                 "(it then takes any length; default 2)"),
        export.add_argument("--test-results", metavar="CSV",
                            help="the run's test_results.csv for the model card (default: "
                                 "<output_folder>/test_results.csv beside save/, if any)"),
        export.add_argument("--overwrite", action="store_true", help="replace existing files"),
    ]
    known["export"] = {"-h", "--help"}.union(*(a.option_strings for a in actions))

    plot = commands.add_parser(
        "plot", help="spectrograms of a mixture and its separated outputs, in one PNG",
        description="Stack the spectrograms of a mixture and its separated outputs in one PNG.",
    )
    plot.add_argument("mixture", metavar="MIXTURE.wav")
    plot.add_argument("outputs", nargs="*", metavar="SOURCE.wav",
                      help="separated outputs (default: <prefix>_spk*.wav and <prefix>_noise.wav)")
    plot.add_argument("--prefix", help="where nass separate wrote the outputs, e.g. out/talk "
                                       "(default: the mixture's path without extension)")
    plot.add_argument("-o", "--output", metavar="OUT.png",
                      help="the PNG to write (default: <mixture>_spectrograms.png)")

    demo = commands.add_parser(
        "demo", help="train, evaluate and use a small model on data shipped with nass",
        description="Build a small noisy Libri2Mix-style corpus from speech and noise shipped "
                    "with nass, train a small NASS Sepformer on it with the LibriMix recipe, "
                    "evaluate it, separate a test mixture and plot it. A smoke demo, not a "
                    "benchmark.",
    )
    demo.add_argument("--out-dir", default="nass-demo",
                      help="where everything goes (default ./nass-demo)")
    demo.add_argument("--minutes", type=float, default=2.0,
                      help="about how long training may take (default 2)")
    demo.add_argument("--epochs", type=int,
                      help="train exactly this many epochs (default: as many as fit --minutes)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the corpus and the training")
    demo.add_argument("--quick", action="store_true",
                      help="a tiny corpus and model, for tests (seconds, not minutes)")
    return parser, known


if __name__ == "__main__":
    sys.exit(main())
