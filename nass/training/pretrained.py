"""Starting a training run from a SpeechBrain pretrained-model folder (``pretrained_separator``).

The folder (``nass export``'s, or a SpeechBrain hub model's:
:mod:`nass.model.loading`) must describe the run's architecture. A folder
with C masks starts a noise-aware run with C speakers + noise: the speaker
masks load, and the noise mask's rows of the mask network's last convolution
keep the run's own fresh initialisation.

Example
-------
>>> import tempfile, torch
>>> from nass.model.loading import MODULE_NAMES, load_model, recipe_hparams
>>> tiny = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1, "inter_layers": 1,
...         "nhead": 2, "d_ffn": 32, "chunk_size": 20}
>>> plain = load_model(recipe_hparams(), {**tiny, "noise_output": False, "pcl_weight": 0})
>>> with tempfile.TemporaryDirectory() as folder:
...     for name in MODULE_NAMES:
...         torch.save(getattr(plain, name).state_dict(), f"{folder}/{name}.ckpt")
...     loaded = init_from_pretrained(load_model(recipe_hparams(), tiny), folder)
>>> loaded
'encoder, decoder and speaker masks 1-2 loaded; the noise mask starts fresh'
"""

import logging
from pathlib import Path

from nass.model.checkpoints import CheckpointMismatchError, check_fit, describe_masknet, load_state
from nass.model.loading import layout_error, missing_files

logger = logging.getLogger(__name__)

# The parameters of SpeechBrain's Dual_Path_Model whose size depends on the
# number of masks: conv2d maps N channels to N * masks, mask k being rows
# [k N, (k + 1) N) (the output is viewed as [B * masks, N, K, S]).
MASK_PARAMETERS = ("conv2d.weight", "conv2d.bias")


def init_from_pretrained(separator, folder):
    """Loads the encoder, mask network and decoder of ``folder`` into ``separator``.

    The folder must describe the same architecture. Its mask network makes
    as many masks as ``separator`` or, when ``separator`` has a noise
    output, one fewer: then the folder's masks become the speaker masks and
    the noise mask's rows of ``masknet.conv2d`` keep their initialisation.

    Arguments
    ---------
    separator : nass.model.separator.NoiseAwareSeparator
    folder : str or Path
        Holding ``encoder.ckpt``, ``masknet.ckpt`` and ``decoder.ckpt``.

    Returns
    -------
    str
        What was loaded (also logged).

    Raises
    ------
    FileNotFoundError, nass.model.checkpoints.CheckpointMismatchError
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

    >>> import torch
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
