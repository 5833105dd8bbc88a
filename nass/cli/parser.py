"""The ``nass`` argument parser."""

import argparse

from nass.export.onnx import ONNX_FILE
from nass.inference.windows import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP


def build_parser():
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
        separate.add_argument("--trust-hparams", action="store_true",
                              help="build a pretrained-model folder's hyperparams.yaml even if "
                                   "it names code other than constructors of torch, "
                                   "speechbrain and nass (only for folders you wrote yourself)"),
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
        separate.add_argument("--batch-size", type=int, metavar="N",
                              help="the most windows (of one input or of several) run through "
                                   "the model at once, fewer if --max-memory cannot hold them "
                                   "(default 16 on CUDA, 1 on the CPU)"),
        separate.add_argument("--compile", action="store_true",
                              help="run whole windows through torch.compile of the model, "
                                   "compiled once for one batch shape (the time is printed); "
                                   "needs a C++ compiler on the CPU"),
        separate.add_argument("--noise-output", type=int, metavar="K",
                              help="call model output K (0-based, as listed in "
                                   "<input>_sources.json) the noise, instead of the one "
                                   "identified"),
        separate.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)"),
        separate.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"],
                              help="fp32: the exact model (default; on CUDA with TF32 off, "
                                   "although SpeechBrain turns it on at import); tf32: fp32 "
                                   "weights with TF32 matrix products and convolutions (CUDA "
                                   "only); bf16: the mask network's weights in bf16 (less memory; "
                                   "faster on CPUs with AMX and on GPUs), outputs about 40 dB "
                                   "SI-SNR from fp32's; fp16: the same in fp16 (closer to fp32 "
                                   "than bf16, smaller range), on CUDA and on CPUs with native "
                                   "fp16 matrix products (AVX512-FP16, AMX-FP16). Agreement with "
                                   "the CPU's fp32 on CUDA: README.md"),
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
        export.add_argument("--trust-hparams", action="store_true",
                            help="build a pretrained-model folder's hyperparams.yaml even if it "
                                 "names code other than constructors of torch, speechbrain and "
                                 "nass (only for folders you wrote yourself)"),
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
                      help="the PNG to write (default: <mixture>_spectrograms.png); never one "
                           "of the files plotted")
    plot.add_argument("--overwrite", action="store_true", help="replace an existing PNG")

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


