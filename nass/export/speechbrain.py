"""``nass export``: a trained model as a SpeechBrain pretrained-model folder.

:func:`export_pretrained` writes SpeechBrain's hub layout: ``hyperparams.yaml``
in the style of its model cards (the architecture with every value resolved,
``num_spks`` the number of outputs, the ``nass`` key the model's
:class:`nass.model.Outputs`), the three state dicts and a ``README.md`` model
card. Before it returns, SpeechBrain's ``SepformerSeparation`` loads the
folder and must separate a random mixture into nass's outputs.
"""

import copy
import csv
import io
import logging
import math
import os
import tempfile
from pathlib import Path

import torch
from hyperpyyaml import resolve_references
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, TaggedScalar

from nass.export import ExportError, check_writable
from nass.model.checkpoints import read_meta
from nass.model.loading import FACTS_KEY, HPARAMS_FILE, MODULE_NAMES, load_trained

logger = logging.getLogger(__name__)

README_FILE = "README.md"
# SpeechBrain's outputs must equal nass's to this (absolute, on outputs of about 0.1-1).
CHECK_TOLERANCE = 1e-5
CHECK_SECONDS = 1.0
# What the model card lists of the training run (those its hparams have).
TRAINING_OPTIONS = ("experiment_name", "data_folder", "noisy", "train_set", "librimix_mode",
                    "wham_mode", "dynamic_mixing", "noise_output", "noise_assignment",
                    "pcl_weight", "N_epochs", "batch_size", "lr", "training_signal_len",
                    "use_speedperturb", "precision", "seed")


def export_pretrained(hparams_file, checkpoint, out_dir, overrides=None, overwrite=False,
                      test_results=None):
    """Writes the model of ``hparams_file`` + ``checkpoint`` to ``out_dir`` (see the module).

    Arguments
    ---------
    hparams_file : str or Path
        The recipe hparams file the model was trained with.
    checkpoint : str or Path
        A ``CKPT+...`` folder or a ``save/`` folder (its best checkpoint).
    out_dir : str or Path
        The folder to write; existing files in it are kept unless ``overwrite``.
    overrides : dict, optional
        The hparams overrides the model was trained with (``{"num_spks": 3}``).
    overwrite : bool
    test_results : str or Path, optional
        The run's ``test_results.csv``; by default the one beside ``save/``
        (``<output_folder>/test_results.csv``), if any.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    names = [HPARAMS_FILE, README_FILE] + [f"{n}.ckpt" for n in MODULE_NAMES]
    check_writable(out_dir, names, overwrite)
    model, sample_rate, ckpt, hparams = load_trained(hparams_file, checkpoint, overrides)
    card = model_card_hparams(hparams_file, overrides, sample_rate, model.outputs)
    if test_results is None:
        test_results = ckpt.parent.parent / "test_results.csv"
        test_results = test_results if test_results.is_file() else None
    results = read_test_results(test_results) if test_results else None

    readme = model_card(hparams_file, overrides, hparams, model, ckpt, results, out_dir.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Written and checked in a hidden folder first: a failed or interrupted
    # export leaves no half-usable model under the final names.
    with tempfile.TemporaryDirectory(prefix=".nass-export-", dir=out_dir) as partial:
        partial = Path(partial)
        (partial / HPARAMS_FILE).write_text(card, encoding="utf-8")
        for name in MODULE_NAMES:
            state = {k: v.detach().cpu() for k, v in getattr(model, name).state_dict().items()}
            torch.save(state, partial / f"{name}.ckpt")
        (partial / README_FILE).write_text(readme, encoding="utf-8")
        difference = check_with_speechbrain(partial, model, sample_rate)
        for name in names:
            os.replace(partial / name, out_dir / name)
    logger.info("SpeechBrain's SepformerSeparation loads %s: outputs within %.1e of nass's",
                out_dir, difference)
    return out_dir


def model_card_hparams(hparams_file, overrides, sample_rate, outputs):
    """The text of a model-card ``hyperparams.yaml`` for the separator of ``hparams_file``.

    The recipe's ``separator`` entry names its encoder, mask network and
    decoder; their definitions are taken with every ``!ref`` resolved (and
    ``overrides`` applied), the mask network's intra/inter blocks lifted to
    entries of their own, as in SpeechBrain's model cards.
    """
    tree = _resolved_recipe(hparams_file, overrides)
    if "separator" not in tree:
        raise ExportError(f"{hparams_file} has no 'separator' entry to export")
    parts = tree["separator"]
    masknet = copy.deepcopy(parts["masknet"])
    blocks = CommentedMap()
    for key, value in list(masknet.items()):
        if isinstance(value, CommentedMap) and value.tag.value:
            name = _top_level_name(tree, parts["masknet"][key]) or key
            blocks[name] = copy.deepcopy(value)
            masknet[key] = TaggedScalar(f"<{name}>", tag="!ref")
    masknet["num_spks"] = TaggedScalar("<num_spks>", tag="!ref")

    network = CommentedMap()
    network["Encoder"] = copy.deepcopy(parts["encoder"])
    network.update(blocks)
    network["MaskNet"] = masknet
    network["Decoder"] = copy.deepcopy(parts["decoder"])
    from_nass = sorted({tag for tag in _tags(network) if ":nass." in tag})
    if from_nass:
        raise ExportError(f"the separator of {hparams_file} uses {', '.join(from_nass)}: "
                          f"SpeechBrain alone could not build it from the folder")

    yaml = YAML(typ="rt")
    yaml.indent(mapping=4, sequence=4, offset=2)
    facts_map = CommentedMap(outputs.to_dict())
    body = io.StringIO()
    yaml.dump(network, body)
    facts_text = io.StringIO()
    yaml.dump({FACTS_KEY: facts_map}, facts_text)
    return "\n".join([
        "# ############################################################################",
        f"# Model: inference for source separation, exported by nass from {Path(hparams_file).name}",
        "# Load with speechbrain.inference.separation.SepformerSeparation.from_hparams(source=<this folder>)",
        "# or nass.inference.Separator.from_pretrained(<this folder>). See README.md.",
        "# ############################################################################",
        "",
        f"sample_rate: {int(sample_rate)}",
        f"# Masks, i.e. outputs of separate_batch: {outputs.describe()}",
        f"num_spks: {outputs.num_outputs}",
        "",
        "# What nass knows about the outputs (SpeechBrain ignores this key): how many are",
        "# speakers, whether one is the noise and, with noise_assignment fixed, which",
        "# (noise_index, counting from 0); with pit any output may be the noise.",
        facts_text.getvalue().rstrip(),
        "",
        body.getvalue().rstrip(),
        "",
        "modules:",
        "    encoder: !ref <Encoder>",
        "    masknet: !ref <MaskNet>",
        "    decoder: !ref <Decoder>",
        "",
        "# No paths: the files are <name>.ckpt in the folder from_hparams is given.",
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer",
        "    loadables:",
        "        encoder: !ref <Encoder>",
        "        masknet: !ref <MaskNet>",
        "        decoder: !ref <Decoder>",
        "",
    ])


def check_with_speechbrain(folder, model, sample_rate, seconds=CHECK_SECONDS):
    """Largest difference between SpeechBrain's ``separate_batch`` of ``folder`` and ``model``.

    Raises :class:`ExportError` above :data:`CHECK_TOLERANCE`.
    """
    from speechbrain.inference.separation import SepformerSeparation

    # No savedir: SpeechBrain reads the files in place (no copies, no links, no hub).
    loaded = SepformerSeparation.from_hparams(source=str(Path(folder).resolve()),
                                              run_opts={"device": "cpu"})
    mix = 0.1 * torch.randn(2, round(seconds * sample_rate),
                            generator=torch.Generator().manual_seed(0))
    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        theirs = loaded.separate_batch(mix)
        ours = model(mix)
    if theirs.shape != ours.shape:
        raise ExportError(f"SpeechBrain separates {folder} into {tuple(theirs.shape)}, nass into "
                          f"{tuple(ours.shape)}")
    difference = float((theirs - ours).abs().max())
    if not difference <= CHECK_TOLERANCE:
        raise ExportError(f"SpeechBrain's outputs for {folder} differ from nass's by {difference:.2e}")
    return difference


def read_test_results(path):
    """``{"utterances": n, "sdr": .., "sdr_i": .., "si-snr": .., "si-snr_i": ..}`` of a ``test_results.csv``."""
    with open(path, newline="", encoding="utf-8") as fin:
        rows = list(csv.DictReader(fin))
    average = [r for r in rows if r.get("snt_id") == "avg"]
    if not average:
        raise ExportError(f"{path} has no 'avg' row")
    out = {"utterances": len(rows) - 1, "path": str(path)}
    out.update({k: float(v) for k, v in average[0].items() if k != "snt_id"})
    return out


def model_card(hparams_file, overrides, hparams, model, ckpt, results, name):
    """The ``README.md`` of an exported folder."""
    outputs = model.outputs
    backbone = "Sepformer" if "self_att" in " ".join(model.masknet.state_dict()) else "DPRNN"
    kind = "NASS (noise-aware)" if outputs.noise_output else "plain (no noise output)"
    params = {n: sum(p.numel() for p in getattr(model, n).parameters()) for n in MODULE_NAMES}
    meta = read_meta(ckpt)
    epoch = _epoch(ckpt)
    run_file = Path(ckpt).parent.parent / HPARAMS_FILE
    run = _run_options(run_file)
    options = run or {k: hparams[k] for k in TRAINING_OPTIONS if k in hparams}
    source = (f"the run's `{run_file.name}`" if run else
              f"`{Path(hparams_file).name}` with the export's overrides (the run's own "
              f"`{HPARAMS_FILE}` was not found beside `save/`)")
    lines = [
        f"# {backbone} {kind} separator, exported by nass",
        "",
        f"Separates a single-channel mixture at {hparams['sample_rate']} Hz into "
        f"{outputs.describe()}.",
        "",
        "## Outputs",
        "",
        _noise_sentence(outputs),
        "",
        "## Architecture",
        "",
        f"* Encoder: Conv1d, kernel {model.encoder.conv1d.kernel_size[0]}, stride "
        f"{model.encoder.conv1d.stride[0]}, {model.encoder.conv1d.out_channels} filters "
        f"({params['encoder']:,} parameters).",
        f"* Mask network: SpeechBrain `Dual_Path_Model` ({backbone}), "
        f"{model.num_outputs} masks ({params['masknet']:,} parameters).",
        f"* Decoder: ConvTranspose1d ({params['decoder']:,} parameters).",
        "* Every setting is in `hyperparams.yaml`.",
        "",
        "## Training",
        "",
        f"* Recipe: `{Path(hparams_file).name}`; model overrides given to the export: "
        f"`{_format_overrides(overrides)}`.",
        f"* Training data and options (from {source}): "
        + ", ".join(f"`{k}: {v}`" for k, v in options.items()) + ".",
    ]
    valid = meta.get("si-snr")
    lines.append(f"* Checkpoint `{ckpt.name}`" + (f", epoch {epoch}" if epoch is not None else "")
                 + (f", validation SI-SNR {-valid:.2f} dB" if isinstance(valid, (int, float)) else "")
                 + ".")
    lines += ["", "## Test results", ""]
    if results:
        lines += [
            f"From `{Path(results['path']).name}` of the training run "
            f"({results['utterances']} test utterances; noise output dropped, speakers matched by PIT):",
            "",
            "| SI-SNRi | SDRi | SI-SNR | SDR |",
            "|---|---|---|---|",
            "| " + " | ".join(f"{results.get(k, math.nan):.2f} dB"
                             for k in ("si-snr_i", "sdr_i", "si-snr", "sdr")) + " |",
        ]
    else:
        lines.append("No `test_results.csv` was found for this checkpoint.")
    lines += [
        "",
        "## Use with SpeechBrain",
        "",
        "```python",
        "from speechbrain.inference.separation import SepformerSeparation",
        "",
        f'model = SepformerSeparation.from_hparams(source="{name}")   # a local folder: read in place',
        f"est_sources = model.separate_file(path=\"mixture.wav\")   # [1, time, "
        f"{outputs.num_outputs}]: {outputs.describe()}",
        "```",
        "",
        "SpeechBrain's `separate_file` peak-normalises each output; `separate_batch` gives the "
        "model's values. It does not know which output is the noise: see Outputs above.",
        "",
        "## Use with nass",
        "",
        "```bash",
        f"nass separate --checkpoint {name} mixture.wav --out-dir separated/",
        f"# -> separated/mixture_{'.wav, mixture_'.join(outputs.source_names)}.wav",
        f"nass export --checkpoint {name} --out-dir onnx/ --format onnx     # ONNX",
        "```",
        "",
        "```python",
        "from nass.inference import Separator",
        "",
        f'sources = Separator.from_pretrained("{name}").separate_file("mixture.wav")',
        "```",
        "",
        "To start a training run from it: `python train.py hparams/... "
        f"--pretrained_separator {name}`.",
        "",
    ]
    return "\n".join(lines)


def _run_options(path):
    """:data:`TRAINING_OPTIONS` of a run's saved ``hyperparams.yaml`` (``{}`` if none)."""
    if not path.is_file():
        return {}
    try:
        tree = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except Exception:  # a hand-edited or foreign file: the card falls back to the recipe
        return {}
    options = {k: tree[k] for k in TRAINING_OPTIONS if k in tree and not isinstance(tree[k], dict)}
    if "data_folder" in options:
        options["data_folder"] = Path(str(options["data_folder"])).name
    return options


def _noise_sentence(outputs):
    if not outputs.noise_output:
        return "Every output is a speaker."
    if outputs.fixed_noise:
        return (f"Outputs 0-{outputs.num_spks - 1} are speakers; output {outputs.noise_index} "
                "(the last) is the noise (`noise_assignment: fixed`).")
    return (f"{outputs.num_spks} outputs are speakers and one is the noise, in an order that may "
            "change from mixture to mixture (`noise_assignment: pit`): nass picks the noise as "
            "the output least like speech (`nass.inference.pick_noise`).")


def _format_overrides(overrides):
    return " ".join(f"--{k} {v}" for k, v in (overrides or {}).items()) or "none"


def _epoch(ckpt):
    counter = Path(ckpt) / "counter.ckpt"
    try:
        return int(counter.read_text().strip())
    except (OSError, ValueError):
        return None


def _resolved_recipe(hparams_file, overrides):
    """The recipe's yaml tree with overrides applied and every ``!ref`` resolved."""
    text = Path(hparams_file).read_text(encoding="utf-8")
    merged = {"data_folder": str(Path(hparams_file).parent.resolve())}
    merged.update(overrides or {})
    resolved = resolve_references(text, merged).getvalue()
    return YAML(typ="rt").load(resolved)


def _top_level_name(tree, node):
    return next((key for key, value in tree.items() if value is node), None)


def _tags(node):
    if isinstance(node, CommentedMap):
        if node.tag.value:
            yield node.tag.value
        for value in node.values():
            yield from _tags(value)
    elif isinstance(node, list):
        for value in node:
            yield from _tags(value)
