"""Loading a model with its weights: the one place, for inference, export and the command line.

:func:`load_trained` builds a recipe's (or a run's saved) hparams file and loads
a ``CKPT+...`` or ``save/`` folder; :func:`load_pretrained` builds a folder in
SpeechBrain's hub layout (``hyperparams.yaml`` + ``encoder/masknet/decoder.ckpt``),
whose ``nass`` key holds :meth:`Outputs.to_dict` (a hub folder without it has
speakers only). Each gives a :class:`TrainedModel`. A folder's
``hyperparams.yaml`` may name only constructors of torch, speechbrain and nass
(:func:`nass.hparams.check_constructors`) unless ``trust_hparams``; weights are
read with ``weights_only=True``.

Example
-------
>>> small = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1,
...          "inter_layers": 1, "nhead": 2, "d_ffn": 32, "chunk_size": 20}
>>> load_model(recipe_hparams(), small).outputs
Outputs(num_spks=2, noise_output=True, noise_assignment='pit')
"""

from collections import namedtuple
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

from nass.hparams import check_constructors, load_model_hparams, read_text
from nass.model.checkpoints import check_fit, checkpoint_to_evaluate, load_state
from nass.model.outputs import Outputs
from nass.model.separator import NoiseAwareSeparator

HPARAMS_FILE = "hyperparams.yaml"
MODULE_NAMES = ("encoder", "masknet", "decoder")
# Where a nass-exported hyperparams.yaml keeps what SpeechBrain does not know.
FACTS_KEY = "nass"

TrainedModel = namedtuple("TrainedModel", "model sample_rate checkpoint hparams")
TrainedModel.__doc__ = """A separator with its weights, its rate, where the weights came from, and the loaded hparams."""


def recipe_hparams():
    """The LibriMix recipe's ``sepformer-libri2mix.yaml``, shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "assets" / "sepformer-libri2mix.yaml"


def load_model(hparams_file, overrides=None):
    """The (untrained) ``separator`` of a recipe's hparams file."""
    return load_model_hparams(hparams_file, overrides)["separator"]


def load_trained(hparams_file, checkpoint, overrides=None):
    """The model of ``hparams_file`` with the weights of ``checkpoint``.

    ``checkpoint`` is a ``CKPT+...`` folder or a ``save/`` folder holding
    several: the one the recipe's evaluation would use
    (:func:`nass.model.checkpoints.checkpoint_to_evaluate`). ``overrides``
    (``{"num_spks": 3}``) must describe the trained model.

    Raises FileNotFoundError (no hparams file, no checkpoint) and
    :class:`nass.model.checkpoints.CheckpointMismatchError`.
    """
    ckpt = checkpoint_to_evaluate(checkpoint)
    hparams = load_model_hparams(hparams_file, overrides)
    model = hparams["separator"]
    _load_weights(model, ckpt, str(hparams_file))
    return TrainedModel(model, int(hparams["sample_rate"]), ckpt, hparams)


def load_pretrained(folder, trust_hparams=False):
    """The model of a pretrained-model folder, with its weights.

    Its ``hyperparams.yaml`` is built only if it names nothing but
    constructors of torch, speechbrain and nass, unless ``trust_hparams``
    (for a folder you wrote yourself).

    Raises FileNotFoundError (not in the layout), ValueError (a
    ``hyperparams.yaml`` without what a separator needs, or
    :class:`nass.hparams.UntrustedHparamsError`) and
    :class:`nass.model.checkpoints.CheckpointMismatchError`.
    """
    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise FileNotFoundError(layout_error(folder, missing))
    hparams_path = folder / HPARAMS_FILE
    text = read_text(hparams_path)
    if not trust_hparams:
        check_constructors(text, str(hparams_path))
    # Building the modules draws from torch's generator; keep the caller's stream.
    with torch.random.fork_rng(devices=[]):
        hparams = load_hyperpyyaml(text)
    for key in ("modules", "sample_rate", "num_spks"):
        if key not in hparams:
            raise ValueError(f"{hparams_path} has no '{key}'")
    outputs = read_outputs(hparams, str(hparams_path))
    modules = hparams["modules"]
    model = NoiseAwareSeparator(modules["encoder"], modules["masknet"], modules["decoder"],
                                outputs)
    _load_weights(model, folder, str(hparams_path))
    return TrainedModel(model, int(hparams["sample_rate"]), folder, hparams)


def read_outputs(hparams, source):
    """The :class:`Outputs` of a folder's loaded ``hyperparams.yaml``, checked against its ``num_spks``.

    >>> read_outputs({"num_spks": 3}, "h.yaml")
    Outputs(num_spks=3, noise_output=False, noise_assignment='pit')
    >>> read_outputs({"num_spks": 2, "nass": {"num_speakers": 2, "noise_output": True}}, "h.yaml")
    Traceback (most recent call last):
    ...
    ValueError: h.yaml: num_spks is 2 outputs but its nass key describes 3 (2 speakers + noise)
    """
    facts = hparams.get(FACTS_KEY)
    if facts is None:
        return Outputs(int(hparams["num_spks"]), noise_output=False)
    outputs = Outputs.from_dict(facts, f"{source} ({FACTS_KEY} key)")
    if outputs.num_outputs != hparams["num_spks"]:
        kind = f"{outputs.num_spks} speakers" + (" + noise" if outputs.noise_output else "")
        raise ValueError(f"{source}: num_spks is {hparams['num_spks']} outputs but its "
                         f"{FACTS_KEY} key describes {outputs.num_outputs} ({kind})")
    return outputs


def _load_weights(model, folder, source):
    modules = {name: getattr(model, name) for name in MODULE_NAMES}
    check_fit(modules, folder, hparams_name=source)
    for name, module in modules.items():
        module.load_state_dict(load_state(Path(folder) / f"{name}.ckpt"), strict=True)


def missing_files(folder, with_hparams=True):
    """The files of the pretrained-model layout that ``folder`` lacks (all of them if no folder)."""
    folder = Path(folder)
    names = ([HPARAMS_FILE] if with_hparams else []) + [f"{n}.ckpt" for n in MODULE_NAMES]
    return [name for name in names if not (folder / name).is_file()]


def is_pretrained_folder(path):
    """Whether ``path`` is a folder in the pretrained-model layout.

    >>> is_pretrained_folder("no/such/folder")
    False
    """
    return Path(path).is_dir() and not missing_files(path)


def layout_error(folder, missing):
    """The message for a folder that is not in the layout."""
    return (f"{folder} is not a pretrained-model folder: it lacks {', '.join(missing)} "
            f"(expected {HPARAMS_FILE} and {', '.join(f'{n}.ckpt' for n in MODULE_NAMES)}, "
            f"as SpeechBrain's hub models and nass export have)")
