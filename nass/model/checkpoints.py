"""Finding checkpoints and checking that they fit a model before loading them.

A checkpoint folder is SpeechBrain's ``CKPT+<date>+<time>+<n>/`` holding one
file per recoverable (``encoder.ckpt``, ``masknet.ckpt``, ...) and
``CKPT.yaml`` with its metadata; the reference release uses the same layout.
:func:`checkpoint_to_evaluate` is the one rule by which the recipe's
evaluation and ``nass separate`` pick a checkpoint from a folder.
:func:`check_fit` compares every module's state dict with the file it would
be loaded from and raises one :class:`CheckpointMismatchError` that says what
differs in the words a user thinks in (speakers, backbone), rather than a
stack of missing keys.
"""

import logging
from pathlib import Path

import torch
import yaml

logger = logging.getLogger(__name__)

# The files a separator is loaded from; a checkpoint without them cannot be evaluated.
SEPARATOR_FILES = ("encoder", "masknet", "decoder")


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose tensors do not fit the model built from the hparams."""


class CorruptCheckpointError(CheckpointMismatchError):
    """A checkpoint file that cannot be read at all (truncated, overwritten, not PyTorch's)."""


class NoCheckpointError(FileNotFoundError):
    """A folder with no checkpoint that can be loaded."""


def list_checkpoints(folder):
    """``CKPT+*`` folders in ``folder``, or ``[folder]`` if it is one itself."""
    folder = Path(folder)
    if (folder / "CKPT.yaml").is_file():
        return [folder]
    return sorted(p for p in folder.glob("CKPT+*") if (p / "CKPT.yaml").is_file())


def read_meta(ckpt_dir):
    """The metadata dict of ``CKPT.yaml``."""
    with open(Path(ckpt_dir) / "CKPT.yaml") as fin:
        return yaml.safe_load(fin) or {}


def checkpoint_to_evaluate(folder, min_key="si-snr"):
    """The checkpoint of ``folder`` that evaluation and ``nass separate`` use: one rule for both.

    ``folder`` is one ``CKPT+...`` folder or a ``save/`` folder holding
    several. The checkpoint of lowest ``min_key`` is chosen (SpeechBrain's
    rule); checkpoints without the key (intra-epoch ones, written every
    ``ckpt_interval_minutes``) are used only when no other exists, the
    newest first, with a warning. A checkpoint whose separator files
    (:data:`SEPARATOR_FILES`) are missing or unreadable is skipped, with a
    warning; when none is left, :class:`NoCheckpointError`.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> parts = {name: torch.nn.Linear(2, 2) for name in SEPARATOR_FILES}
    >>> with tempfile.TemporaryDirectory() as save:
    ...     saver = Checkpointer(save, parts)
    ...     intra = saver.save_checkpoint(meta={"brain_intra_epoch_ckpt": True}, end_of_epoch=False)
    ...     only_intra = checkpoint_to_evaluate(save) == intra.path
    ...     best = saver.save_checkpoint(meta={"si-snr": -9.0})
    ...     _ = saver.save_checkpoint(meta={"si-snr": -3.0})
    ...     only_intra, checkpoint_to_evaluate(save) == best.path
    (True, True)
    """
    found = list_checkpoints(folder)
    if not found:
        raise NoCheckpointError(f"no checkpoint in {folder}: {_where_checkpoints_are(folder)}")
    metas = {ckpt: read_meta(ckpt) for ckpt in found}
    scored = sorted(
        (c for c, m in metas.items() if isinstance(m.get(min_key), (int, float))),
        key=lambda c: metas[c][min_key],
    )
    unscored = sorted(
        (c for c in found if c not in scored),
        key=lambda c: metas[c].get("unixtime", 0),
        reverse=True,
    )
    skipped = []
    for ckpt in scored + unscored:
        problems = checkpoint_problems(ckpt, SEPARATOR_FILES)
        if problems:
            skipped.append(f"{ckpt}: {', '.join(problems)}")
            logger.warning("Not using checkpoint %s: %s", ckpt, ", ".join(problems))
            continue
        if ckpt not in scored:
            logger.warning(
                "Using checkpoint %s, which has no %s: an intra-epoch checkpoint, saved before "
                "the run finished an epoch; it is the only loadable checkpoint in %s",
                ckpt, min_key, folder,
            )
        return ckpt
    raise NoCheckpointError(
        f"no loadable checkpoint in {folder}: " + "; ".join(skipped)
    )


def _where_checkpoints_are(path):
    """The end of the message for ``path`` holding no checkpoint: where they may be instead."""
    path = Path(path)
    if path.is_file():
        return "it is a file, not a folder"
    if list_checkpoints(path / "save"):
        return f"it is a run's output folder; its checkpoints are in {path / 'save'}"
    return "expected a CKPT+... folder with CKPT.yaml, or a folder holding such folders"


def checkpoint_problems(ckpt_dir, names):
    """Why ``ckpt_dir`` cannot be resumed from: missing, empty or unreadable files.

    SpeechBrain writes ``CKPT.yaml`` before the recoverables, so a run killed
    while saving leaves a folder that looks complete but is not. Tensor files
    are read with ``weights_only=True``: a pickle that would run code (or
    build anything but tensors and plain containers) counts as unreadable.
    """
    problems = []
    for name in names:
        path = Path(ckpt_dir) / f"{name}.ckpt"
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{path.name} missing or empty")
            continue
        try:
            if name in ("brain", "counter"):
                if yaml.safe_load(path.read_text()) is None:
                    problems.append(f"{path.name} is blank")
            else:
                load_state(path)
        except Exception as err:  # truncated zip, bad yaml, code in a pickle...: all "not usable"
            problems.append(f"{path.name} unreadable: corrupt, cut short or not plain weights "
                            f"({type(err).__name__})")
    return problems


def set_aside_incomplete(folder, names):
    """Renames unusable ``CKPT+*`` folders to ``incomplete-CKPT+*``; returns the new paths.

    Renaming (not deleting) keeps whatever the killed run left for inspection,
    while SpeechBrain resumes from the newest complete checkpoint.
    """
    moved = []
    for ckpt in list_checkpoints(folder):
        if checkpoint_problems(ckpt, names):
            target = ckpt.with_name(f"incomplete-{ckpt.name}")
            ckpt.rename(target)
            moved.append(target)
    return moved


def load_state(path):
    """A state dict from ``path``, on the CPU; nothing in the file is run (``weights_only``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def describe_masknet(state):
    """``(backbone, n_masks)`` read off a ``Dual_Path_Model`` state dict."""
    keys = " ".join(state)
    if ".rnn." in keys:
        backbone = "DPRNN (recurrent blocks)"
    elif "self_att" in keys or ".layers." in keys:
        backbone = "Sepformer (transformer blocks)"
    else:
        backbone = "unknown backbone"
    n_masks = None
    conv = state.get("conv2d.weight")
    end = state.get("end_conv1x1.weight")
    if conv is not None and end is not None:
        n_masks = conv.shape[0] // end.shape[1]
    return backbone, n_masks


def check_fit(modules, ckpt_dir, hparams_name="the hparams"):
    """Raises :class:`CheckpointMismatchError` unless every module fits its file.

    Arguments
    ---------
    modules : dict
        ``{recoverable name: nn.Module}``, e.g. ``{"masknet": masknet}``.
    ckpt_dir : Path
        The ``CKPT+...`` folder.
    hparams_name : str
        How to name the model's source in the message (the yaml file).
    """
    ckpt_dir = Path(ckpt_dir)
    problems, corrupt = [], []
    for name, module in modules.items():
        path = ckpt_dir / f"{name}.ckpt"
        if not path.is_file():
            problems.append(f"{path.name} is missing")
            continue
        try:
            saved = load_state(path)
        except Exception as err:  # whatever torch raised, the file is unusable
            # torch's own message advises weights_only=False, i.e. running the
            # file's code: not advice to pass on about a file that is broken.
            corrupt.append(f"{path.name} ({type(err).__name__})")
            continue
        problems.extend(_compare(name, module.state_dict(), saved))
    if corrupt:
        raise CorruptCheckpointError(
            f"checkpoint {ckpt_dir} is corrupt: {', '.join(corrupt)} cannot be read as a PyTorch "
            f"state dict of plain weights (cut short, overwritten, or a pickle that would run "
            f"code?); use another checkpoint"
        )
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {ckpt_dir} does not fit the model built from {hparams_name}:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _compare(name, expected, saved):
    if name == "masknet":
        want, have = describe_masknet(expected), describe_masknet(saved)
        if want[0] != have[0]:
            return [f"masknet.ckpt is a {have[0]} but {name} is a {want[0]}"]
        if want[1] != have[1]:
            return [
                f"masknet.ckpt makes {have[1]} masks but the model makes {want[1]} "
                f"(num_spks + noise output); set num_spks/noise_output to match"
            ]
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        f"{k}: {tuple(saved[k].shape)} in the file, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    out = []
    if missing:
        out.append(f"{name}.ckpt lacks {len(missing)} key(s) of the model, e.g. {missing[:3]}")
    if unexpected:
        out.append(f"{name}.ckpt has {len(unexpected)} key(s) the model lacks, e.g. {unexpected[:3]}")
    if shapes:
        out.append(f"{name}.ckpt differs in {len(shapes)} shape(s), e.g. {shapes[:3]}")
    return out
