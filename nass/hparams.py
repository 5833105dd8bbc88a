"""Reading hparams files: overrides checked before anything is built, the model's settings loaded.

:func:`check_overrides` names in one line a key the file lacks (with the closest
it has), a value of another kind than the file's, for separation a key that
does not shape the model (:func:`model_settings`: what ``separator``,
``sample_rate`` and ``outputs`` are built from), and any override of the
resolved copy SpeechBrain saves in an output folder. :func:`load_model_hparams`
builds a recipe file's model without touching its data or output folders.

Example
-------
>>> text = "num_spks: 2\\nlr: 0.001\\nmodel: !new:torch.nn.Linear [!ref <num_spks>, 1]\\n"
>>> check_overrides({"num_spk": 3}, text, "h.yaml")
Traceback (most recent call last):
...
nass.hparams.OverrideError: --num_spk: h.yaml has no such setting; did you mean --num_spks?
>>> check_overrides({"lr": "fast"}, text, "h.yaml")
Traceback (most recent call last):
...
nass.hparams.OverrideError: --lr expects a number (h.yaml has 0.001), got 'fast'
>>> sorted(model_settings(text, ["model"]))
['model', 'num_spks']
"""

import difflib
import re
from pathlib import Path

import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar

from nass.logs import quiet_torchvision_note

# What ``nass separate`` reads from an hparams file: the model, the rate it
# was trained at, and what its outputs are (how its noise output was trained).
# Every other setting (training, data, run options such as precision) changes
# nothing there: the one list to extend when separation gains such an option.
INFERENCE_ROOTS = ("separator", "sample_rate", "outputs", "noise_assignment")

# Settings that shape no model but must agree with one for the hparams file to
# build: the baseline switch is ``--noise_output False --pcl_weight 0``
# everywhere, and PCL without a noise output is refused when the file loads.
INFERENCE_CONSISTENCY = ("pcl_weight",)

# The first lines of the copy ``speechbrain.create_experiment_directory`` saves.
_RESOLVED_COPY = re.compile(r"\A# Generated [^\n]* from:\n# [^\n]*\n# yamllint disable\n")
_REF = re.compile(r"<([A-Za-z_]\w*)")


class OverrideError(ValueError):
    """An override that the hparams file cannot take."""


class _PlainLoader(yaml.SafeLoader):
    """Reads HyperPyYAML as plain YAML: tagged values (``!new:``, ``!ref``...) become None."""


_PlainLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def plain_settings(text, source="the hparams file"):
    """``{top-level key: value}`` of an hparams file, with tagged values as None.

    Raises :class:`OverrideError` naming ``source`` if it is not a YAML mapping.
    """
    try:
        settings = yaml.load(text, Loader=_PlainLoader)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise OverrideError(f"{source} is not a YAML hparams file: cannot parse it{line}") from None
    if not isinstance(settings, dict):
        raise OverrideError(f"{source} is not a YAML hparams file (expected key: value settings)")
    return settings


def is_resolved_copy(text):
    """Whether ``text`` is the ``hyperparams.yaml`` SpeechBrain saved in an output folder."""
    return bool(_RESOLVED_COPY.match(text))


def model_settings(text, roots=INFERENCE_ROOTS):
    """The top-level keys that ``roots`` are built from, following their ``!ref`` and ``!copy`` references.

    The file is read as YAML (tags kept, nothing built); a reference names
    keys as ``<key>`` or ``<key.attr>``, possibly inside an expression.
    """
    tree = YAML(typ="rt").load(text)
    needed, todo = set(), [r for r in roots if r in tree]
    while todo:
        key = todo.pop()
        if key not in needed:
            needed.add(key)
            todo.extend(k for k in _references(tree[key]) if k in tree)
    return needed


def _references(node):
    """The keys a YAML node refers to (``!ref``/``!copy`` scalars, at any depth)."""
    if isinstance(node, TaggedScalar) and node.tag.value in ("!ref", "!copy"):
        yield from _REF.findall(node.value)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def check_overrides(overrides, text, source, purpose="training"):
    """Raises :class:`OverrideError` for the first override ``text`` cannot take.

    Arguments
    ---------
    overrides : dict
        ``{key: value}`` as read from the command line (values parsed as YAML).
    text : str
        The hparams file's text.
    source : str
        How to name the file in messages.
    purpose : str
        ``"training"`` (the recipes) or ``"inference"`` (``nass separate``,
        which refuses settings that do not shape the model).
    """
    settings = plain_settings(text, source)
    if overrides and is_resolved_copy(text):
        raise OverrideError(
            f"{source} is the copy of a run's settings that SpeechBrain saved, with every "
            f"reference already filled in, so --{next(iter(overrides))} would not reach the "
            f"model built from it; give it without overrides (it holds the run's own), or use "
            f"the recipe's hparams file with the run's overrides"
        )
    inert = None if purpose != "inference" else (
        set(settings) - model_settings(text) - set(INFERENCE_CONSISTENCY))
    for key, value in overrides.items():
        if key not in settings:
            close = difflib.get_close_matches(key, [k for k in settings if not k.startswith("__")], n=1)
            hint = f"; did you mean --{close[0]}?" if close else ""
            raise OverrideError(f"--{key}: {source} has no such setting{hint}")
        if inert is not None and key in inert:
            raise OverrideError(
                f"--{key} changes nothing when separating (it is not a setting of the model in "
                f"{source}); leave it out"
            )
        expected = _kind(settings[key])
        if expected is not None and _kind(value) not in _ACCEPTS[expected]:
            raise OverrideError(
                f"--{key} expects {expected} ({source} has {settings[key]!r}), got {value!r}"
            )


_ACCEPTS = {"True or False": {"True or False"}, "a number": {"a number"}}


def _kind(value):
    """The kind of a plain setting that an override must keep, or None when any will do."""
    if isinstance(value, bool):
        return "True or False"
    if isinstance(value, (int, float)):
        return "a number"
    return None


def read_text(hparams_file):
    """The text of an hparams file; FileNotFoundError or ValueError naming it otherwise."""
    hparams_file = Path(hparams_file)
    if not hparams_file.is_file():
        raise FileNotFoundError(f"no hparams file {hparams_file}")
    try:
        return hparams_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{hparams_file} is not a YAML hparams file (not text)") from None


def load_model_hparams(hparams_file, overrides=None):
    """The hparams of a recipe's yaml file, for building its model: no data folder, nothing written.

    The data folder is set to the file's own folder (nothing is read from
    it) and the checkpointer is left out (it would create the output
    folder). Overrides (a dict, or YAML text) must name settings of the
    model (:func:`check_overrides` with ``purpose="inference"``).
    """
    text = read_text(hparams_file)
    if isinstance(overrides, str):
        overrides = yaml.safe_load(overrides) or {}
    check_overrides(overrides or {}, text, str(hparams_file), purpose="inference")
    settings = plain_settings(text, str(hparams_file))
    if "separator" not in settings:
        raise ValueError(f"{hparams_file} builds no `separator`: not a NASS recipe hparams file")
    merged = {}
    if "data_folder" in settings:
        merged["data_folder"] = str(Path(hparams_file).parent.resolve())
    if "checkpointer" in settings:
        merged["checkpointer"] = None
    merged.update(overrides or {})
    quiet_torchvision_note()
    # The recipe files seed torch's global generator; keep the caller's stream.
    with torch.random.fork_rng(devices=[]):
        return load_hyperpyyaml(text, merged)
