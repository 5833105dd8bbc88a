"""``nass export``: a SpeechBrain pretrained-model folder (:mod:`nass.export.speechbrain`) or ONNX."""

from nass.cli import EXIT_FAILED, EXIT_OK, report
from nass.export import ExportError
from nass.export.onnx import export_onnx_file
from nass.export.speechbrain import export_pretrained
from nass.model.loading import load_pretrained, load_trained


def export_command(args, overrides):
    """``nass export``: a SpeechBrain pretrained-model folder, or an ONNX file."""
    try:
        if args.format == "onnx":
            if not args.window_seconds > 0 or args.window_seconds == float("inf"):
                raise ExportError(f"--window-seconds must be a number of seconds > 0, got "
                                  f"{args.window_seconds:g}")
            trained = _load(args, overrides)
            result = export_onnx_file(trained, args.out_dir, args.window_seconds,
                                      overwrite=args.overwrite)
            checked = ", ".join(f"{n} samples {db:.1f} dB" for n, db in
                                zip(result["lengths"], result["min_sdr_db"]))
            print(f"nass export: wrote {result['path']} (ONNX Runtime vs PyTorch, worst "
                  f"output: {checked})")
        else:
            if args.hparams is None:
                raise ExportError("--format speechbrain needs --hparams, the recipe file the "
                                  "checkpoint was trained with")
            out = export_pretrained(args.hparams, args.checkpoint, args.out_dir, overrides,
                                    overwrite=args.overwrite, test_results=args.test_results)
            print(f"nass export: wrote {out} (SpeechBrain's SepformerSeparation loads it)")
    except ExportError as err:
        report(str(err), command="export")
        return EXIT_FAILED
    except Exception as err:  # a model that cannot be loaded or exported: one message
        report(f"{type(err).__name__}: {err}", command="export")
        return EXIT_FAILED
    return EXIT_OK


def _load(args, overrides):
    """The trained model that ``--checkpoint`` (and ``--hparams``) name."""
    if args.checkpoint is None:
        raise ExportError("give --checkpoint (with --hparams for a recipe checkpoint)")
    if args.hparams is None:
        if overrides:
            raise ExportError(f"hparams overrides ({', '.join('--' + k for k in overrides)}) "
                              f"need --hparams; a pretrained-model folder describes itself")
        return load_pretrained(args.checkpoint, trust_hparams=args.trust_hparams)
    return load_trained(args.hparams, args.checkpoint, overrides)
