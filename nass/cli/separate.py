"""``nass separate``: every input separated into ``<stem>_spk1.wav .. <stem>_noise.wav`` and a report.

Before anything is separated the run is refused if the model cannot be
loaded, ``--out-dir`` cannot be written to, or two inputs would write the same
output (or an output would replace an input). Then each input that cannot be
separated gets one line naming it; the others are still separated, and the
exit status is 1 if any failed.
"""

import sys
import warnings

from tqdm import tqdm

from nass.audio import (
    AudioInputError,
    OutputPathError,
    TruncatedAudioWarning,
    check_out_dir,
    plan_outputs,
    read_audio,
    report_path,
    save_report,
    save_sources,
)
from nass.cli import EXIT_FAILED, EXIT_OK, report
from nass.inference import Separator
from nass.inference.memory import MemoryBudgetError
from nass.inference.process import reuse_freed_memory
from nass.model.precision import PrecisionError, SlowPrecisionWarning


def separate_command(args, overrides):
    """``nass separate``: separates every input, reports failures, returns the exit status."""
    reuse_freed_memory()  # each window's tensors on the memory of the last, no fresh pages
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

    # Windows of consecutive inputs are separated in batches (Separator.separate_each).
    separated = separator.separate_each(readable(), noise_output=args.noise_output)
    for (path, sample_rate), sources in tqdm(separated, total=len(plan), disable=None,
                                             unit="file", desc="files"):
        paths, sidecar = plan[path], report_path(path, args.out_dir)
        try:
            if isinstance(sources, Exception):
                raise sources
            save_sources(sources, sample_rate, paths, overwrite=args.overwrite,
                         normalize=args.normalize)
            save_report(sources.report, path, paths, sidecar)
        except (AudioInputError, OSError, RuntimeError) as err:
            failed += 1
            report(f"{path}: {err}")
        else:
            if sources.report["close"]:
                noise = sources.report["outputs"]["noise"]
                scores = ", ".join(f"{v:.2f}" for v in sources.report["noise_scores"])
                report(f"{path}: close call which output is the noise: model output {noise} "
                       f"was taken (one-voice scores {scores}; see {sidecar}); to choose "
                       f"another, rerun with --noise-output K --overwrite", level="warning")
            tqdm.write(f"{path} -> {', '.join(str(p) for p in paths.values())}")
    if separator.compile_note:
        report(separator.compile_note, level="note")
    if failed:
        report(f"{failed} of {len(args.inputs)} input(s) failed")
        return EXIT_FAILED
    return EXIT_OK


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
    options.update(device=args.device, precision=args.precision)
    if args.hparams is None:
        if overrides:
            raise ValueError(f"hparams overrides ({', '.join('--' + k for k in overrides)}) "
                             f"need --hparams; a pretrained-model folder describes itself")
        return Separator.from_pretrained(args.checkpoint, **options)
    return Separator.from_hparams(args.hparams, args.checkpoint, overrides=overrides, **options)
