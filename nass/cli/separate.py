"""``nass separate``: every input separated into ``<stem>_spk1.wav .. <stem>_noise.wav`` and a report.

Before anything is separated the run is refused if the model cannot be
loaded, ``--out-dir`` cannot be written to, or two inputs would write the same
output (or an output would replace an input). Then each input that cannot be
separated gets one line naming it; the others are still separated, and the
exit status is 1 if any failed. With ``--overwrite``, outputs of the same
input that this model does not write (``<stem>_noise.wav`` or
``<stem>_spk3.wav`` of another model's run) are removed, each named, so that
the folder holds one run's outputs. Ctrl-C removes the outputs of the input
in progress and names the inputs done.
"""

import sys
import warnings
from pathlib import Path

from tqdm import tqdm

from nass.audio import (
    AudioInputError,
    OutputPathError,
    TruncatedAudioWarning,
    check_out_dir,
    find_outputs,
    plan_outputs,
    read_audio,
    report_path,
    save_report,
    save_sources,
)
from nass.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, report
from nass.inference import Separator
from nass.inference.memory import MemoryBudgetError
from nass.inference.process import reuse_freed_memory
from nass.model.precision import PrecisionError, SlowPrecisionWarning


def separate_command(args, overrides):
    """``nass separate``: separates every input, reports failures, returns the exit status."""
    reuse_freed_memory()  # each window's tensors on the memory of the last, no fresh pages
    for option, value, finite in (("--chunk-seconds", args.chunk_seconds, False),
                                  ("--max-memory", args.max_memory, True)):
        # Checked here to name the option: the API's message names its argument.
        if value is not None and not (value > 0 and (not finite or value < float("inf"))):
            report(f"{option} must be a number > 0, got {value:g}")
            return EXIT_FAILED
    if args.batch_size is not None and args.batch_size < 1:
        report(f"--batch-size must be a whole number >= 1, got {args.batch_size}")
        return EXIT_FAILED
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SlowPrecisionWarning)
            separator = load_separator(args, overrides, chunk_seconds=args.chunk_seconds,
                                       progress=sys.stderr.isatty(), max_memory=args.max_memory,
                                       batch_size=args.batch_size, compile=args.compile)
        # The rule is asked more than once while loading: each message once.
        for message in dict.fromkeys(str(w.message) for w in caught
                                     if issubclass(w.category, SlowPrecisionWarning)):
            report(message, level="warning")
    except PrecisionError as err:
        report(f"--precision {args.precision}: {err}")
        return EXIT_FAILED
    except MemoryBudgetError as err:
        report(str(err))
        return EXIT_FAILED
    except Exception as err:  # any failure to build or load the model is one message, not a trace
        report(f"cannot load the model: {err}")
        return EXIT_FAILED
    try:
        separator.check_noise_output(args.noise_output)
    except ValueError as err:
        report(f"--noise-output: {err}")
        return EXIT_FAILED
    try:
        plan = plan_outputs(args.inputs, separator.source_names, args.out_dir)
        if args.out_dir is not None:
            check_out_dir(args.out_dir)
    except OutputPathError as err:
        report(f"{err}; nothing was separated")
        return EXIT_FAILED
    what = "ONNX model" if args.onnx else "checkpoint"
    print(f"nass separate: using {what} {separator.checkpoint}")
    for note in (separator.window_note, separator.batch_note):
        if note:
            report(note, level="note")
    done = []
    try:
        failed = _separate_each(separator, plan, args, done)
    except KeyboardInterrupt:
        report(f"interrupted; {len(done)} of {len(plan)} input(s) separated"
               + (f" (the last: {done[-1]})" if done else "")
               + "; the outputs of the input in progress were removed", level="error")
        return EXIT_INTERRUPTED
    if separator.compile_note:
        report(separator.compile_note, level="note")
    if failed:
        report(f"{failed} of {len(args.inputs)} input(s) failed")
        return EXIT_FAILED
    return EXIT_OK


def _separate_each(separator, plan, args, done):
    """Separates the inputs of ``plan``, appending each one done to ``done``; returns how many failed.

    Inputs are read as the separator asks for them, and the windows of
    consecutive inputs go through the model in batches (``Separator.separate_each``).
    """
    failed = 0

    def readable():
        """``((path, rate), waveform, rate)`` of each input that may be separated; the others reported."""
        nonlocal failed
        for path, paths in plan.items():
            try:
                existing = [p.name for p in [*paths.values(), report_path(path, args.out_dir)]
                            if p.exists()]
                if existing and not args.overwrite:
                    verb = "exists" if len(existing) == 1 else "exist"
                    raise FileExistsError(
                        f"{', '.join(existing)} already {verb} from before this run "
                        f"(use --overwrite to replace)"
                    )
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", TruncatedAudioWarning)
                    waveform, sample_rate = read_audio(path)
            except (AudioInputError, OSError) as err:
                failed += 1
                report(f"{path}: {err}")
                continue
            for warning in caught:
                report(str(warning.message), level="warning")
            yield (path, sample_rate), waveform, sample_rate

    separated = separator.separate_each(readable(), noise_output=args.noise_output)
    for (path, sample_rate), sources in tqdm(separated, total=len(plan), disable=None,
                                             unit="file", desc="files"):
        paths, sidecar = plan[path], report_path(path, args.out_dir)
        written = []
        try:
            if isinstance(sources, Exception):
                raise sources
            for name, target in paths.items():
                # Listed before it is written: Ctrl-C during the write removes it too.
                written.append(target)
                save_sources({name: sources[name]}, sample_rate, {name: target},
                             overwrite=args.overwrite, normalize=args.normalize)
            written.append(sidecar)
            save_report(sources.report, path, paths, sidecar)
        except (AudioInputError, OSError, RuntimeError) as err:
            failed += 1
            report(f"{path}: {err}")
        except KeyboardInterrupt:
            for target in written:
                target.unlink(missing_ok=True)
            raise
        else:
            done.append(path)
            if args.overwrite:
                _remove_stale_outputs(path, paths)
            if sources.report["close"]:
                noise = sources.report["outputs"]["noise"]
                scores = ", ".join(f"{v:.2f}" for v in sources.report["noise_scores"])
                report(f"{path}: close call which output is the noise: model output {noise} "
                       f"was taken (one-voice scores {scores}; see {sidecar}); to choose "
                       f"another, rerun with --noise-output K --overwrite", level="warning")
            tqdm.write(f"{path} -> {', '.join(str(p) for p in paths.values())}")
    return failed


def _remove_stale_outputs(path, paths):
    """Removes ``<stem>_spk*.wav`` / ``<stem>_noise.wav`` beside ``paths`` that this run did not write."""
    prefix = next(iter(paths.values())).parent / Path(path).stem
    for stale in find_outputs(path, prefix):
        if stale not in paths.values():
            stale.unlink()
            tqdm.write(f"nass separate: removed {stale}, an output of an earlier run with "
                       f"another model (--overwrite)", file=sys.stderr)


def load_separator(args, overrides, **options):
    """The :class:`Separator` that ``--onnx``, ``--checkpoint`` and ``--hparams`` name."""
    if args.onnx:
        if args.hparams or args.checkpoint or overrides:
            raise ValueError("--onnx takes the model from the ONNX file alone: leave out "
                             "--hparams, --checkpoint and hparams overrides")
        return Separator.from_onnx(args.onnx, device=args.device, precision=args.precision,
                                   **options)
    if args.checkpoint is None:
        raise ValueError("give --checkpoint (with --hparams for a recipe checkpoint) or --onnx")
    if Path(args.checkpoint).is_file() and Path(args.checkpoint).suffix.lower() == ".onnx":
        raise ValueError(f"--checkpoint {args.checkpoint} is a file, not a checkpoint folder; an "
                         f"ONNX model (nass export --format onnx) is given as --onnx "
                         f"{args.checkpoint}")
    options.update(device=args.device, precision=args.precision)
    if args.hparams is None:
        if overrides:
            raise ValueError(f"hparams overrides ({', '.join('--' + k for k in overrides)}) "
                             f"need --hparams; a pretrained-model folder describes itself")
        return Separator.from_pretrained(args.checkpoint, trust_hparams=args.trust_hparams,
                                         **options)
    return Separator.from_hparams(args.hparams, args.checkpoint, overrides=overrides, **options)
