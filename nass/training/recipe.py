"""What every recipe's ``train.py`` does: ``python train.py hparams.yaml [--option value]``.

Parse the hparams and overrides, set up DDP, check everything that can refuse
the run (options, the data folder, a checkpoint that must fit) before the
output folder is written, prepare the csvs, train :class:`SeparationBrain`
(resuming from the newest checkpoint; from scratch with the reference's
initialisation, or from ``pretrained_separator``) and evaluate the checkpoint
``nass separate`` would use. :func:`main` answers a user's mistake in one line
(exit 1) and Ctrl-C with the checkpoint kept (exit 130). About 500 lines: the
checks before writing (options, ranges, the run lock) are most of it.
"""

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import ddp_barrier, if_main_process, run_on_main
from speechbrain.utils.run_opts import RunOptions

from nass.training.brain import SeparationBrain
from nass.model.checkpoints import (
    CheckpointMismatchError,
    NoCheckpointError,
    check_fit,
    checkpoint_to_evaluate,
    list_checkpoints,
    set_aside_incomplete,
)
from nass.data.prepare import DataFolderError, check_data_folder, prepare_layout
from nass.training.initialisation import initialise_like_reference
from nass.files import LockedError, hold_lock
from nass.logs import quiet_torchvision_note
from nass.hparams import OverrideError, check_overrides, plain_settings
from nass.model.loading import layout_error, missing_files
from nass.model.precision import PrecisionError, precision_dtype, set_tf32, speechbrain_precision
from nass.training.pretrained import init_from_pretrained

logger = logging.getLogger(__name__)


class RecipeError(ValueError):
    """A run that cannot start as asked; the message says what to change."""


# A person's mistakes, answered in one line by main().
USER_ERRORS = (RecipeError, OverrideError, DataFolderError, CheckpointMismatchError,
               NoCheckpointError)

MODEL_RECOVERABLES = ("encoder", "masknet", "decoder", "patchsamplenet")
# Held in the output folder for a run's length: a second run into the folder
# would delete the first's checkpoints and write its epochs into the same log.
RUN_LOCK = ".nass-run.lock"


def _flag_options():
    """SpeechBrain's boolean run options, which its parser takes as bare flags."""
    parser = RunOptions._create_parser()
    return {
        opt
        for action in parser._actions
        if isinstance(action, argparse._StoreTrueAction)
        for opt in action.option_strings
    }


def normalise_flags(argv):
    """Accepts ``--test_only True`` (the recipes' documented form) for flag options.

    SpeechBrain 1.x parses its boolean run options (``--test_only``,
    ``--noprogressbar``, ...) as bare flags, so a following ``True`` would be
    glued onto the previous override. ``--flag True`` becomes ``--flag`` and
    ``--flag False`` is dropped.
    """
    flags, out, i = _flag_options(), [], 0
    while i < len(argv):
        arg, value = argv[i], None
        if arg.startswith("--") and "=" in arg and arg.split("=", 1)[0] in flags:
            arg, value = arg.split("=", 1)
        elif arg in flags and i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false"):
            value = argv[i + 1]
            i += 1
        i += 1
        if value is None or value.lower() == "true":
            out.append(arg)
        elif value.lower() != "false":
            raise RecipeError(f"{arg} takes True or False, got {value!r}")
    return out


def run_option(name, run_opts, hparams):
    """A run option with SpeechBrain's priority: command line > hparams > default."""
    if name in run_opts.overridden_args:
        return run_opts[name]
    return hparams.get(name, run_opts[name])


def parse_arguments(argv):
    """``(hparams_file, run_opts, overrides, hparams)`` from command-line arguments.

    Overrides are checked against the file first (:func:`nass.hparams.check_overrides`),
    and a ``!PLACEHOLDER`` left unset is named with the file's comment on it.
    """
    argv, tf32 = _take_tf32(normalise_flags(list(argv)))
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    overrides = last_of_each(overrides)
    if tf32:
        run_opts = dataclasses.replace(run_opts, precision="tf32")
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            text = fin.read()
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read the hparams file {hparams_file} ({err})") from None
    given = plain_settings(overrides, "the command-line overrides") if overrides else {}
    check_overrides(given, text, hparams_file)
    try:
        hparams = load_hyperpyyaml(text, overrides)
    except OSError as err:   # the checkpointer makes <output_folder>/save as it is built
        raise RecipeError(f"cannot create {err.filename} ({err.strerror}); check "
                          f"--output_folder") from err
    except ValueError as err:
        unset = re.match(r"'(\w+)' is a !PLACEHOLDER", str(err))
        if unset is None:
            # nass's own constructors (outputs, objective) refuse settings that do not go together.
            # NASS_DEBUG's traceback keeps where the constructor refused (from err).
            raise RecipeError(f"{hparams_file} with these options: {err}") from err
        key = unset.group(1)
        about = _comment_above(text, key)
        raise RecipeError(
            f"--{key} is required: {hparams_file} leaves it to the command line"
            + (f" ({about})" if about else "")
        ) from None
    return hparams_file, run_opts, overrides, hparams


def _take_tf32(argv):
    """``(argv, tf32)``: ``--precision tf32`` given to SpeechBrain's parser as fp32, which it knows."""
    out, tf32 = list(argv), False
    for i, arg in enumerate(out):
        if arg == "--precision=tf32":
            out[i], tf32 = "--precision=fp32", True
        elif arg == "--precision" and i + 1 < len(out) and out[i + 1] == "tf32":
            out[i + 1], tf32 = "fp32", True
    return out, tf32


def last_of_each(overrides):
    """SpeechBrain's overrides (``key: value`` lines) with each key's last line only, as argparse
    treats an option given twice; each repeated option is noted on stderr.

    >>> last_of_each("N_epochs: 2\\nlr: 0.1\\nN_epochs: 5")
    'lr: 0.1\\nN_epochs: 5'
    """
    lines = {}
    for line in overrides.splitlines():
        key = line.split(":", 1)[0]
        if key in lines:
            logger.warning("--%s is given more than once; the last, %s, is used", key,
                           line.split(":", 1)[1].strip())
            del lines[key]
        lines[key] = line
    return "\n".join(lines.values())


def _comment_above(text, key):
    """The comment lines just above ``key:`` in an hparams file, joined."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"{key}:"):
            comment = []
            while index > 0 and lines[index - 1].startswith("# ") and "----" not in lines[index - 1]:
                index -= 1
                comment.insert(0, lines[index][2:].strip())
            return " ".join(comment)
    return ""


def audio_datasets(csvs, hparams):
    """``{split: DynamicItemDataset}`` reading ``mix``, ``s1..sC`` and ``noise`` signals."""
    keys = ["mix"] + [f"s{k}" for k in range(1, hparams["num_spks"] + 1)]
    datasets = {}
    for split, path in csvs.items():
        data = sb.dataio.dataset.DynamicItemDataset.from_csv(csv_path=str(path))
        columns = set(next(iter(data.data.values())).keys()) if len(data) else set()
        split_keys = keys + (["noise"] if "noise_wav" in columns else [])
        for key in split_keys:
            sb.dataio.dataset.add_dynamic_item(
                [data], _reader(key), takes=[f"{key}_wav"], provides=[f"{key}_sig"]
            )
        sb.dataio.dataset.set_output_keys([data], ["id"] + [f"{k}_sig" for k in split_keys])
        datasets[split] = data
    return datasets


def _reader(key):
    def read(path):
        return sb.dataio.dataio.read_audio(path)

    read.__name__ = f"read_{key}"
    return read


def _model_modules(hparams):
    recoverables = hparams["checkpointer"].recoverables
    return {k: recoverables[k] for k in MODEL_RECOVERABLES if k in recoverables}


def _check_checkpoint(hparams, hparams_file, ckpt):
    if ckpt is not None:
        logger.info("Checking that %s fits %s", ckpt, hparams_file)
        check_fit(_model_modules(hparams), ckpt, hparams_name=hparams_file)


def _register_patch_sampler(hparams):
    """Checkpoints the patch sampler as ``patchsamplenet`` when PCL is on (it is None otherwise)."""
    sampler = hparams["patchsamplenet"]
    if hparams["objective"].uses_pcl and sampler is None:
        raise ValueError("pcl_weight > 0 but the hparams build no patchsamplenet")
    if sampler is not None:
        hparams["checkpointer"].add_recoverable("patchsamplenet", sampler)
    return sampler


def run(argv):
    """Runs a recipe from command-line arguments (``sys.argv[1:]``).

    Raises :class:`Interrupted` on Ctrl-C, saying which checkpoint was kept.
    """
    hparams_file, run_opts, overrides, hparams = parse_arguments(argv)
    try:
        return _run(hparams_file, run_opts, overrides, hparams)
    except KeyboardInterrupt:
        raise Interrupted(hparams["save_folder"]) from None


def _run(hparams_file, run_opts, overrides, hparams):
    run_opts = _checkpoint_steps_alone(run_opts)
    sb.utils.distributed.ddp_init_group(run_opts)
    _check_options(hparams, run_opts)
    run_opts = _set_precision(hparams, run_opts)
    patch_sampler = _register_patch_sampler(hparams)
    test_only = run_option("test_only", run_opts, hparams)
    save_folder = Path(hparams["save_folder"])
    output_folder = Path(hparams["output_folder"])
    # A folder that exists is locked before its checkpoints are looked at (and
    # incomplete ones set aside); a new one as it is made.
    new_lock = not (output_folder / RUN_LOCK).exists()
    lock = _lock_output_folder(output_folder) if output_folder.is_dir() else None
    # The lock is let go however the run ends (a refusal, an error, Ctrl-C): its file's
    # flock would otherwise refuse a later run in this same process.
    try:
        # Before anything is written: a checkpoint that does not fit refuses the run.
        # What nass logs meanwhile goes to the run's log.txt too, once that exists.
        try:
            with _held_back("nass") as held:
                evaluated = _check_before_writing(hparams, hparams_file, test_only, save_folder)
        except BaseException:
            if lock is not None and new_lock:    # a refused run leaves no file of its own
                (output_folder / RUN_LOCK).unlink()
            raise
        if lock is None:
            output_folder.mkdir(parents=True, exist_ok=True)
            lock = _lock_output_folder(output_folder)
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )
        _release(held)

        splits = ("test",) if test_only else ("train", "valid", "test")
        if hparams["dynamic_mixing"] and not test_only:
            splits = ("valid", "test")
        run_on_main(
            prepare_layout,
            kwargs={
                "layout": hparams["dataset_layout"],
                "save_folder": hparams["save_folder"],
                "sample_rate": hparams["sample_rate"],
                "splits": splits,
                "skip_prep": hparams["skip_prep"],
            },
        )
        csvs = prepare_layout(
            hparams["dataset_layout"], hparams["save_folder"], hparams["sample_rate"],
            splits=splits, skip_prep=True,
        )
        datasets = audio_datasets(csvs, hparams)
        if hparams["dynamic_mixing"] and not test_only:
            from nass.data.dynamic_mixing import dynamic_mixing_dataset

            datasets["train"] = dynamic_mixing_dataset(hparams)

        modules = {"separator": hparams["separator"]}
        if patch_sampler is not None:
            modules["patchsamplenet"] = patch_sampler
        brain = SeparationBrain(
            modules=modules,
            opt_class=hparams["optimizer"],
            hparams=hparams,
            run_opts=run_opts,
            checkpointer=hparams["checkpointer"],
        )
        if not test_only:
            # Same seed on every process: the ranks start equal (a resumed run then loads its checkpoint).
            initialise_like_reference(brain.separator_module, patch_sampler)
            start_from_pretrained(hparams, resuming=hparams["checkpointer"].find_checkpoint() is not None)
            brain.fit(
                brain.hparams.epoch_counter,
                datasets["train"],
                datasets["valid"],
                train_loader_kwargs=hparams["dataloader_opts"],
                valid_loader_kwargs=hparams["dataloader_opts"],
            )
            evaluated = checkpoint_to_evaluate(save_folder)
        brain.write_test_results(datasets["test"], evaluated, hparams["dataloader_opts"])
        if torch.distributed.is_initialized():
            # Leaving with the group alive lets gloo's threads abort the process at exit.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        return brain
    finally:
        if lock is not None:
            lock.close()


def _lock_output_folder(folder):
    """The lock of ``folder`` held for this run (by the main process only, under torchrun)."""
    if not if_main_process():
        return None
    try:
        return hold_lock(folder / RUN_LOCK)
    except LockedError as err:
        raise RecipeError(
            f"--output_folder {folder} is in use by another run ({err}); wait for it to "
            f"finish, or give another --output_folder"
        ) from None


def start_from_pretrained(hparams, resuming):
    """Loads ``pretrained_separator`` into the separator, unless the run resumes.

    Called after the modules are built and initialised, so a noise mask the
    folder lacks keeps that initialisation; a resumed run takes its weights
    from its own checkpoint instead.
    """
    folder = hparams.get("pretrained_separator")
    if not folder:
        return
    if resuming:
        logger.info("Resuming from a checkpoint: pretrained_separator %s not loaded", folder)
        return
    init_from_pretrained(hparams["separator"], folder)


def _check_before_writing(hparams, hparams_file, test_only, save_folder):
    """Refuses a run whose checkpoint (to evaluate, or to resume) does not fit, or whose data
    folder is missing; returns the checkpoint to evaluate with ``test_only``, else None."""
    evaluated = None
    if test_only:
        if not list_checkpoints(save_folder):
            raise RecipeError(
                f"test_only is True but {save_folder} holds no CKPT+... checkpoint to evaluate; "
                f"point --output_folder at the folder whose save/ holds it"
            )
        evaluated = checkpoint_to_evaluate(save_folder)
        _check_checkpoint(hparams, hparams_file, evaluated)
    else:
        checkpointer = hparams["checkpointer"]
        resumable = [n for n in checkpointer.recoverables if not checkpointer.optional_recoverables.get(n)]
        resumable.append("optimizer")
        if if_main_process():   # one process renames; the others wait for it
            for path in set_aside_incomplete(save_folder, resumable):
                logger.warning("%s was left incomplete by a killed run; set aside", path)
        ddp_barrier()
        newest = checkpointer.find_checkpoint()
        _check_checkpoint(hparams, hparams_file, newest.path if newest else None)
    check_data_folder(hparams["dataset_layout"])
    return evaluated


@contextlib.contextmanager
def _held_back(name):
    """Holds back the records of logger ``name`` (and its children); yields their list.

    They are emitted at once if the block raises, else by :func:`_release`
    (after SpeechBrain has set up the run's log file).
    """
    held_logger = logging.getLogger(name)
    held = []
    handler = logging.Handler()
    handler.emit = held.append
    propagate = held_logger.propagate
    held_logger.addHandler(handler)
    held_logger.propagate = False
    try:
        yield held
    except BaseException:
        held_logger.removeHandler(handler)
        held_logger.propagate = propagate
        _release(held)
        raise
    held_logger.removeHandler(handler)
    held_logger.propagate = propagate


def _release(records):
    for record in records:
        logging.getLogger(record.name).handle(record)


def _checkpoint_steps_alone(run_opts):
    """``--ckpt_interval_steps N`` alone replaces the hparams' interval in minutes.

    SpeechBrain refuses both at once, and the recipes' hparams set minutes.
    """
    given = run_opts.overridden_args
    if "ckpt_interval_steps" in given and "ckpt_interval_minutes" not in given \
            and run_opts["ckpt_interval_steps"] > 0:
        return dataclasses.replace(run_opts, ckpt_interval_minutes=0,
                                   overridden_args=given | {"ckpt_interval_minutes"})
    return run_opts


def _check_options(hparams, run_opts):
    pretrained = hparams.get("pretrained_separator")
    missing = missing_files(pretrained, with_hparams=False) if pretrained else []
    if missing:
        raise RecipeError(f"pretrained_separator: {layout_error(pretrained, missing)}")
    if hparams["outputs"].noise_output and "noise" not in hparams["dataset_layout"].targets:
        raise RecipeError(
            "noise_output is True but the dataset has no noise targets (clean mixtures); "
            "use noisy data or --noise_output False --pcl_weight 0"
        )
    if hparams["dynamic_mixing"] and hparams["dataset_layout"].mixture.endswith("_reverb"):
        raise RecipeError(
            "dynamic_mixing makes anechoic mixtures; it cannot train on reverberant "
            f"{hparams['dataset_layout'].mixture} data"
        )
    precision = run_option("precision", run_opts, hparams)
    try:
        device = _device(run_opts, hparams)
        torch.device(device)
    except RuntimeError:
        raise RecipeError(f"--device {device} is not a device: give cpu, cuda or cuda:N") from None
    try:
        precision_dtype(precision, device, training=True)
    except PrecisionError as err:
        raise RecipeError(f"--precision {precision}: {err}") from None


def _device(run_opts, hparams):
    """The run's device: --device, the hparams', else CUDA when there is one (SpeechBrain's choice)."""
    # --precision and --device are SpeechBrain run options, not hparams overrides.
    return run_option("device", run_opts, hparams) or ("cuda:0" if torch.cuda.is_available() else "cpu")


def _set_precision(hparams, run_opts):
    """Sets TF32 as the precision asks (:func:`nass.model.precision.set_tf32`); SpeechBrain runs tf32 as its fp32."""
    precision = run_option("precision", run_opts, hparams)
    set_tf32(precision, _device(run_opts, hparams))
    return dataclasses.replace(run_opts, precision=speechbrain_precision(precision),
                               overridden_args=run_opts.overridden_args | {"precision"})


def main():
    """Entry point of the recipes' ``train.py``: a user's mistake is one line, not a traceback."""
    program = Path(sys.argv[0]).name
    quiet_torchvision_note()
    try:
        run(sys.argv[1:])
    except Interrupted as err:
        print(f"{program}: {err}", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as err:
        if os.environ.get("NASS_DEBUG"):
            raise
        print(f"{program}: error: {err}", file=sys.stderr)
        sys.exit(1)


class Interrupted(Exception):
    """A run stopped by Ctrl-C; the message says what it kept."""

    def __init__(self, save_folder):
        found = list_checkpoints(save_folder)
        kept = (f"the newest checkpoint is {found[-1]}; rerun the same command to resume from "
                f"it (the epoch in progress restarts)" if found else
                f"no checkpoint was saved yet in {save_folder}")
        super().__init__(f"interrupted; {kept}")
