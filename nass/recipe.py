"""What every recipe's ``train.py`` does, once: ``python train.py hparams.yaml [--opt value]``.

1. Load the HyperPyYAML file with command-line overrides; set up DDP when
   started by ``torchrun``; create the output folder.
2. Check the data folder and write the csvs (main process only), using the
   ``dataset_layout`` the hparams file builds (LibriMix, WHAM!, custom, ...).
3. Build the datasets (or the dynamic-mixing training set).
4. Train with :class:`nass.brain.SeparationBrain` (resuming from the newest
   checkpoint, or else starting from ``pretrained_separator`` when it names a
   folder: :func:`nass.pretrained.init_from_pretrained`), unless ``test_only``.
5. Evaluate the best checkpoint and write ``test_results.csv``.
"""

import argparse
import logging
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.run_opts import RunOptions

from nass.brain import SeparationBrain
from nass.checkpoints import best_checkpoint, check_fit, list_checkpoints, set_aside_incomplete
from nass.data.prepare import prepare_layout
from nass.pretrained import init_from_pretrained, layout_error, missing_files

logger = logging.getLogger(__name__)

MODEL_RECOVERABLES = ("encoder", "masknet", "decoder", "patchsamplenet")


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
            raise ValueError(f"{arg} takes True or False, got {value!r}")
    return out


def run_option(name, run_opts, hparams):
    """A run option with SpeechBrain's priority: command line > hparams > default."""
    if name in run_opts.overridden_args:
        return run_opts[name]
    return hparams.get(name, run_opts[name])


def load_hparams(argv):
    """``(hparams_file, run_opts, overrides, hparams)`` from command-line arguments."""
    hparams_file, run_opts, overrides = sb.parse_arguments(normalise_flags(list(argv)))
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    return hparams_file, run_opts, overrides, hparams


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


def run(argv):
    """Runs a recipe from command-line arguments (``sys.argv[1:]``)."""
    hparams_file, run_opts, overrides, hparams = load_hparams(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    _check_options(hparams, run_opts)
    test_only = run_option("test_only", run_opts, hparams)
    save_folder = Path(hparams["save_folder"])
    if test_only:
        # Before any data work: a missing or unfitting checkpoint is the likelier mistake.
        if not list_checkpoints(save_folder):
            raise FileNotFoundError(
                f"test_only is True but {save_folder} holds no CKPT+... checkpoint to evaluate; "
                f"point --output_folder at the folder whose save/ holds it"
            )
        _check_checkpoint(hparams, hparams_file, best_checkpoint(save_folder))

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
    if hparams["objective"].uses_pcl:
        modules["patchsamplenet"] = hparams["patchsamplenet"]
    brain = SeparationBrain(
        modules=modules,
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    if not test_only:
        checkpointer = hparams["checkpointer"]
        resumable = [n for n in checkpointer.recoverables if not checkpointer.optional_recoverables.get(n)]
        resumable.append("optimizer")
        for path in set_aside_incomplete(save_folder, resumable):
            logger.warning("%s was left incomplete by a killed run; set aside", path)
        newest = hparams["checkpointer"].find_checkpoint()
        _check_checkpoint(hparams, hparams_file, newest.path if newest else None)
        start_from_pretrained(hparams, resuming=newest is not None)
        brain.fit(
            brain.hparams.epoch_counter,
            datasets["train"],
            datasets["valid"],
            train_loader_kwargs=hparams["dataloader_opts"],
            valid_loader_kwargs=hparams["dataloader_opts"],
        )
    brain.write_test_results(datasets["test"], hparams["dataloader_opts"])
    if torch.distributed.is_initialized():
        # Leaving with the group alive lets gloo's threads abort the process at exit.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return brain


def start_from_pretrained(hparams, resuming):
    """Loads ``pretrained_separator`` into the separator, unless the run resumes.

    Called after the modules are built (and initialised); a resumed run
    takes its weights from its own checkpoint instead.
    """
    folder = hparams.get("pretrained_separator")
    if not folder:
        return
    if resuming:
        logger.info("Resuming from a checkpoint: pretrained_separator %s not loaded", folder)
        return
    init_from_pretrained(hparams["separator"], folder)


def _check_options(hparams, run_opts):
    pretrained = hparams.get("pretrained_separator")
    missing = missing_files(pretrained, with_hparams=False) if pretrained else []
    if missing:
        raise FileNotFoundError(f"pretrained_separator: {layout_error(pretrained, missing)}")
    if hparams["noise_output"] and "noise" not in hparams["dataset_layout"].targets:
        raise ValueError(
            "noise_output is True but the dataset has no noise targets (clean mixtures); "
            "use noisy data or --noise_output False --pcl_weight 0"
        )
    if hparams["dynamic_mixing"] and hparams["dataset_layout"].mixture.endswith("_reverb"):
        raise ValueError(
            "dynamic_mixing makes anechoic mixtures; it cannot train on reverberant "
            f"{hparams['dataset_layout'].mixture} data"
        )
    # --precision and --device are SpeechBrain run options, not hparams overrides.
    precision = run_option("precision", run_opts, hparams)
    device = run_option("device", run_opts, hparams) or (
        "cuda:0" if torch.cuda.is_available() else "cpu"
    )
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise ValueError(
            f"precision fp16 needs a CUDA device (device is {device}); on a CPU use "
            f"--precision bf16 or fp32"
        )


def main():
    """Entry point of the recipes' ``train.py``."""
    run(sys.argv[1:])
