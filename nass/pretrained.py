"""SpeechBrain pretrained-model folders: separating with one, and starting a training run from one.

The folder is SpeechBrain's hub layout (``speechbrain/sepformer-wham``,
``-whamr``, ``-libri3mix``, ``-wsj02mix`` ...), which ``nass export`` also
writes::

    hyperparams.yaml    Encoder, MaskNet, Decoder, modules, pretrainer, sample_rate, num_spks
    encoder.ckpt        state dicts of the three modules
    masknet.ckpt
    decoder.ckpt

``num_spks`` there is the number of masks, i.e. of outputs. A folder written
by ``nass export`` adds, under the key ``nass`` (which SpeechBrain ignores),
how many of those outputs are speakers and whether one is the noise; a
SpeechBrain hub folder has no such key and all its outputs are speakers.

* :func:`load_pretrained` builds a :class:`nass.separator.NoiseAwareSeparator`
  from a folder (``Separator.from_pretrained``, ``nass separate --checkpoint DIR``).
* :func:`init_from_pretrained` loads a folder's weights into a recipe's
  separator (the ``pretrained_separator`` option). A folder with C masks
  starts a noise-aware run with C speakers + noise: the speaker masks load,
  and the noise mask's slice of the mask network's last convolution keeps
  the run's own fresh initialisation.

Loading a folder's ``hyperparams.yaml`` runs the code it names (HyperPyYAML
``!new:`` tags), as SpeechBrain's ``from_hparams`` does: use folders you trust.

Example
-------
>>> import tempfile, torch
>>> import nass
>>> from nass.inference import load_model
>>> hparams = (Path(nass.__file__).parents[1] / "recipes" / "LibriMix" / "separation"
...            / "hparams" / "sepformer-libri2mix.yaml")
>>> tiny = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1, "inter_layers": 1,
...         "nhead": 2, "d_ffn": 32, "chunk_size": 20}
>>> plain = load_model(hparams, {**tiny, "noise_output": False, "pcl_weight": 0})  # a "hub" model
>>> with tempfile.TemporaryDirectory() as folder:
...     for name in MODULE_NAMES:
...         torch.save(getattr(plain, name).state_dict(), f"{folder}/{name}.ckpt")
...     nass_model = load_model(hparams, tiny)                      # 2 speakers + noise
...     loaded = init_from_pretrained(nass_model, folder)
>>> loaded
'encoder, decoder and speaker masks 1-2 loaded; the noise mask starts fresh'
"""

import logging
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

from nass.checkpoints import CheckpointMismatchError, check_fit, describe_masknet, load_state
from nass.separator import NoiseAwareSeparator

logger = logging.getLogger(__name__)

HPARAMS_FILE = "hyperparams.yaml"
MODULE_NAMES = ("encoder", "masknet", "decoder")
# The parameters of SpeechBrain's Dual_Path_Model whose size depends on the
# number of masks: conv2d maps N channels to N * masks, mask k being rows
# [k N, (k + 1) N) (the output is viewed as [B * masks, N, K, S]).
MASK_PARAMETERS = ("conv2d.weight", "conv2d.bias")
# Where a nass-exported hyperparams.yaml keeps what SpeechBrain does not know.
FACTS_KEY = "nass"


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


def read_facts(hparams):
    """What the outputs of a folder's model are: ``num_spks``, ``noise_output``, ``noise_assignment``.

    From the ``nass`` key when ``nass export`` wrote it; otherwise (a
    SpeechBrain hub model) every one of the ``num_spks`` outputs is a speaker.

    >>> read_facts({"num_spks": 3})
    {'num_spks': 3, 'noise_output': False, 'noise_assignment': 'pit'}
    >>> read_facts({"num_spks": 3, "nass": {"num_speakers": 2, "noise_output": True,
    ...                                     "noise_assignment": "fixed"}})
    {'num_spks': 2, 'noise_output': True, 'noise_assignment': 'fixed'}
    """
    facts = hparams.get(FACTS_KEY)
    if not facts:
        return {"num_spks": int(hparams["num_spks"]), "noise_output": False,
                "noise_assignment": "pit"}
    return {"num_spks": int(facts["num_speakers"]), "noise_output": bool(facts["noise_output"]),
            "noise_assignment": facts.get("noise_assignment", "pit")}


def load_pretrained(folder):
    """The separator of a pretrained-model folder, with its weights, and its hparams.

    Returns
    -------
    model : nass.separator.NoiseAwareSeparator
    hparams : dict
        The folder's ``hyperparams.yaml``, loaded.
    facts : dict
        :func:`read_facts` of it.

    Raises
    ------
    FileNotFoundError
        ``folder`` is not in the layout.
    nass.checkpoints.CheckpointMismatchError
        A ``.ckpt`` file does not fit the modules ``hyperparams.yaml`` builds.
    """
    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise FileNotFoundError(layout_error(folder, missing))
    hparams_path = folder / HPARAMS_FILE
    # Building the modules draws from torch's generator; keep the caller's stream.
    with torch.random.fork_rng(devices=[]), open(hparams_path, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin)
    for key in ("modules", "sample_rate", "num_spks"):
        if key not in hparams:
            raise ValueError(f"{hparams_path} has no '{key}'")
    modules = {name: hparams["modules"][name] for name in MODULE_NAMES}
    check_fit(modules, folder, hparams_name=str(hparams_path))
    for name, module in modules.items():
        module.load_state_dict(load_state(folder / f"{name}.ckpt"), strict=True)
    facts = read_facts(hparams)
    model = NoiseAwareSeparator(modules["encoder"], modules["masknet"], modules["decoder"],
                                num_spks=facts["num_spks"], noise_output=facts["noise_output"])
    return model, hparams, facts


def init_from_pretrained(separator, folder):
    """Loads the encoder, mask network and decoder of ``folder`` into ``separator``.

    The folder must describe the same architecture. Its mask network makes
    as many masks as ``separator`` or, when ``separator`` has a noise
    output, one fewer: then the folder's masks become the speaker masks and
    the noise mask's rows of ``masknet.conv2d`` keep their initialisation.

    Arguments
    ---------
    separator : nass.separator.NoiseAwareSeparator
    folder : str or Path
        Holding ``encoder.ckpt``, ``masknet.ckpt`` and ``decoder.ckpt``.

    Returns
    -------
    str
        What was loaded (also logged).

    Raises
    ------
    FileNotFoundError, nass.checkpoints.CheckpointMismatchError
    """
    folder = Path(folder)
    missing = missing_files(folder, with_hparams=False)
    if missing:
        raise FileNotFoundError(f"pretrained_separator: {layout_error(folder, missing)}")
    name = f"the model (pretrained_separator {folder})"
    check_fit({"encoder": separator.encoder, "decoder": separator.decoder}, folder, hparams_name=name)
    state = load_state(folder / "masknet.ckpt")
    target = separator.masknet.state_dict()
    have_backbone, have = describe_masknet(state)
    want_backbone, want = describe_masknet(target)
    if have_backbone != want_backbone:
        raise CheckpointMismatchError(
            f"{folder}/masknet.ckpt is a {have_backbone} but this run's mask network is a "
            f"{want_backbone}")
    speakers = separator.num_spks
    if have == want:
        check_fit({"masknet": separator.masknet}, folder, hparams_name=name)
        what = f"encoder, decoder and all {have} masks loaded"
    elif have == want - 1 and separator.noise_output:
        state = with_fresh_mask(state, target, have)
        _check_shapes(state, target, folder, name)
        what = (f"encoder, decoder and speaker masks 1-{have} loaded; "
                f"the noise mask starts fresh")
    else:
        needed = f"{want}" + (f" or {want - 1} (its speakers)" if separator.noise_output else "")
        raise CheckpointMismatchError(
            f"{folder}/masknet.ckpt makes {have} masks but this run makes {want} "
            f"({speakers} speakers{' + noise' if separator.noise_output else ''}); "
            f"a pretrained separator for it must make {needed}")
    separator.encoder.load_state_dict(load_state(folder / "encoder.ckpt"), strict=True)
    separator.decoder.load_state_dict(load_state(folder / "decoder.ckpt"), strict=True)
    separator.masknet.load_state_dict(state, strict=True)
    logger.info("pretrained_separator %s: %s", folder, what)
    return what


def with_fresh_mask(state, target, masks):
    """``state`` of a mask network with ``masks`` masks, grown by ``target``'s last mask.

    Rows of :data:`MASK_PARAMETERS` beyond ``masks`` masks are taken from
    ``target`` (the initialised model); every other tensor from ``state``.

    >>> old = {"conv2d.weight": torch.ones(4, 2, 1, 1), "conv2d.bias": torch.ones(4), "x": torch.ones(1)}
    >>> new = {"conv2d.weight": torch.zeros(6, 2, 1, 1), "conv2d.bias": torch.zeros(6), "x": torch.zeros(1)}
    >>> grown = with_fresh_mask(old, new, masks=2)
    >>> grown["conv2d.bias"].tolist(), grown["x"].tolist()
    ([1.0, 1.0, 1.0, 1.0, 0.0, 0.0], [1.0])
    """
    grown = dict(state)
    for key in MASK_PARAMETERS:
        if key not in state:
            continue
        rows = state[key].shape[0]
        if rows % masks or target[key].shape[1:] != state[key].shape[1:]:
            raise CheckpointMismatchError(
                f"masknet.ckpt {key} has shape {tuple(state[key].shape)}, which does not "
                f"split into {masks} masks of the model's {tuple(target[key].shape[1:])}")
        fresh = target[key].detach().clone()
        fresh[:rows] = state[key]
        grown[key] = fresh
    return grown


def _check_shapes(state, target, folder, name):
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in target.items() if k in state and state[k].shape != v.shape]
    problems = ([f"lacks {len(missing)} key(s), e.g. {missing[:3]}"] if missing else []) + \
        ([f"has {len(unexpected)} unknown key(s), e.g. {unexpected[:3]}"] if unexpected else []) + \
        ([f"differs in {len(shapes)} shape(s), e.g. {shapes[:3]}"] if shapes else [])
    if problems:
        raise CheckpointMismatchError(
            f"{folder}/masknet.ckpt does not fit {name}: " + "; ".join(problems))
