"""Reading hparams files: overrides checked before anything is built, the model's settings loaded.

HyperPyYAML applies ``--key value`` overrides to whatever the file holds.
:func:`check_overrides` names in one line a key the file lacks (with the closest
it has), a value of another kind than the file's or out of its setting's range
(:data:`SETTING_RANGES`), for separation a key that does not shape the model
(:func:`model_settings`: what ``separator``, ``sample_rate`` and ``outputs`` are
built from), and any override of the resolved copy SpeechBrain saves in an
output folder. :func:`load_model_hparams` builds a recipe file's model without
touching its data or output folders; :func:`check_constructors` refuses a model
folder's file that names code outside torch, speechbrain and nass.

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


# The values the recipes' settings can take, checked before anything is built
# or written: ``(whole number?, lowest, lowest allowed?)``. A value outside
# them would fail deep in training, or run wrong without a word.
_COUNT, _COUNT_OR_ZERO = (True, 1, True), (True, 0, True)
_POSITIVE, _NOT_NEGATIVE = (False, 0, False), (False, 0, True)
SETTING_RANGES = {
    **dict.fromkeys(("N_epochs", "batch_size", "num_spks", "sample_rate", "training_signal_len",
                     "dm_examples_per_epoch", "pcl_num_patches", "pcl_proj_dim",
                     "pcl_frame_window", "N_encoder_out", "out_channels", "kernel_size",
                     "kernel_stride", "intra_layers", "inter_layers", "nhead", "d_ffn",
                     "chunk_size", "num_dual_path_layers", "rnn_hidden"), _COUNT),
    **dict.fromkeys(("n_audio_to_save", "pcl_grad_every"), _COUNT_OR_ZERO),
    **dict.fromkeys(("pcl_temperature",), _POSITIVE),
    # lr 0 is a run that evaluates a pretrained_separator through training unchanged.
    **dict.fromkeys(("lr", "pcl_weight", "max_grad_norm"), _NOT_NEGATIVE),
}


def range_problem(value, whole, lowest, inclusive):
    """What is wrong with ``value`` for a setting of that range, or None.

    >>> range_problem(1.5, *SETTING_RANGES["N_epochs"])
    'must be a whole number >= 1'
    >>> range_problem(0, *SETTING_RANGES["pcl_temperature"]), range_problem(0, *SETTING_RANGES["lr"])
    ('must be a number > 0', None)
    """
    kind = "a whole number" if whole else "a number"
    bound = f"{'>=' if inclusive else '>'} {lowest}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (whole and not isinstance(value, int)) or value != value:
        return f"must be {kind} {bound}"
    if value < lowest or (value == lowest and not inclusive):
        return f"must be {kind} {bound}"
    return None


class UntrustedHparamsError(ValueError):
    """A model folder's hparams file that would run code other than a model's constructors."""


# What a model folder's hparams file may build: objects and functions of these
# packages. Building a HyperPyYAML file calls what its tags name, so a tag
# naming anything else (os.system, subprocess.run, builtins.eval) is refused
# before anything is built. Functions inside these packages are not checked.
TRUSTED_PACKAGES = ("torch", "speechbrain", "nass")
# Tags that build nothing by themselves (references, copies, tuples, unset values).
_INERT_TAGS = ("!ref", "!copy", "!tuple", "!PLACEHOLDER")
_CALLING_TAGS = ("!new:", "!name:", "!module:", "!apply:")


class _TagLoader(yaml.SafeLoader):
    """Reads HyperPyYAML as plain YAML, keeping ``(line, tag)`` of every tagged value."""


def _record_tag(loader, suffix, node):
    loader.tags.append((node.start_mark.line + 1, node.tag.replace("tag:yaml.org,2002:", "!!")))


_TagLoader.add_multi_constructor("!", _record_tag)
# YAML's own Python tags (!!python/object/apply:os.system), which HyperPyYAML's loader builds.
_TagLoader.add_multi_constructor("tag:yaml.org,2002:python/", _record_tag)


def check_constructors(text, source):
    """Raises :class:`UntrustedHparamsError` naming the first tag of ``text`` that could run other code.

    >>> check_constructors("enc: !new:speechbrain.lobes.models.dual_path.Encoder\\n", "h.yaml")
    >>> check_constructors("a: 1\\nb: !apply:os.system [touch x]\\n", "h.yaml")
    Traceback (most recent call last):
    ...
    nass.hparams.UntrustedHparamsError: h.yaml, line 2: !apply:os.system would run code that is not a constructor of torch, speechbrain or nass; refused (if you wrote this file yourself, pass --trust-hparams / trust_hparams=True)
    """
    loader = _TagLoader(text)
    loader.tags = []
    try:
        loader.get_single_data()
    except yaml.YAMLError as err:
        raise UntrustedHparamsError(_unparsable(source, err)) from None
    finally:
        loader.dispose()
    for line, tag in loader.tags:
        if tag in _INERT_TAGS:
            continue
        kind = next((k for k in _CALLING_TAGS if tag.startswith(k)), None)
        if kind is not None and tag[len(kind):].split(".")[0] in TRUSTED_PACKAGES:
            continue
        raise UntrustedHparamsError(
            f"{source}, line {line}: {tag} would run code that is not a constructor of "
            f"{', '.join(TRUSTED_PACKAGES[:-1])} or {TRUSTED_PACKAGES[-1]}; refused (if you "
            f"wrote this file yourself, pass --trust-hparams / trust_hparams=True)"
        )


def _unparsable(source, err):
    """The message for a file that YAML cannot parse, with the line where it stopped."""
    where = getattr(err, "problem_mark", None)
    line = f" (line {where.line + 1})" if where is not None else ""
    return f"{source} is not a YAML hparams file: cannot parse it{line}"


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
        raise OverrideError(_unparsable(source, err)) from None
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
    for key, limits in SETTING_RANGES.items():
        given = key in overrides
        value = overrides[key] if given else settings.get(key)
        if value is None:   # not a setting of this file, or one built by a tag
            continue
        problem = range_problem(value, *limits)
        if problem:
            where = f"--{key}" if given else f"{source}: {key}"
            raise OverrideError(f"{where} {problem}, got {value!r}")


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
