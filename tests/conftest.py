"""Shared fixtures: tiny synthetic corpora and the tiny-model overrides of the recipes."""

import logging
import sys
from pathlib import Path

import pytest
import torch

from nass.data.synthetic import make_custom, make_librimix, make_wham

REPO = Path(__file__).resolve().parents[1]
LIBRIMIX_RECIPE = REPO / "recipes" / "LibriMix" / "separation"
WHAM_RECIPE = REPO / "recipes" / "WHAM" / "separation"

LIBRIMIX_HPARAMS = LIBRIMIX_RECIPE / "hparams" / "sepformer-libri2mix.yaml"
# Overrides of the Sepformer hparams small enough that a recipe run takes seconds on 2 cores.
TINY = {"N_encoder_out": 16, "out_channels": 16, "intra_layers": 1, "inter_layers": 1,
        "nhead": 2, "d_ffn": 32, "chunk_size": 20}
TINY_ARGS = [arg for key, value in TINY.items() for arg in (f"--{key}", str(value))]
TINY_SEPFORMER = TINY_ARGS + [
    "--pcl_proj_dim", "16", "--pcl_num_patches", "16", "--training_signal_len", "4000",
    "--N_epochs", "1",
]
# Tests compare recipe runs and SpeechBrain loaders with references computed on the CPU, so
# they run on the CPU whatever the machine has: SpeechBrain picks CUDA when there is one.
# (The GPU's own checks are tests/test_gpu.py.)
ON_CPU = ["--device", "cpu"]
TINY_DPRNN = [
    "--N_encoder_out", "16", "--out_channels", "16", "--rnn_hidden", "8",
    "--num_dual_path_layers", "1", "--chunk_size", "20",
    "--pcl_proj_dim", "16", "--pcl_num_patches", "16", "--training_signal_len", "4000",
    "--N_epochs", "1",
]


@pytest.fixture(autouse=True)
def restore_logging():
    """The root logger's handlers and level as they were before each test.

    A recipe run in-process (SpeechBrain's ``create_experiment_directory``)
    replaces them with a console handler on the ``sys.stdout`` of that
    moment, which is pytest's capture of that one test: later tests would
    log into a closed stream, and every record would print a "Logging
    error" traceback into their captured stderr.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; OpenMP's spinning threads crawl on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tf32_flags():
    """PyTorch's TF32 flags (matmul, cuDNN) as ``import speechbrain`` leaves them (on); restored after."""
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    saved = [flag.allow_tf32 for flag in flags]
    for flag in flags:
        flag.allow_tf32 = True
    yield flags
    for flag, value in zip(flags, saved):
        flag.allow_tf32 = value


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A save/ folder holding one random tiny-model checkpoint (2 speakers + noise)."""
    from speechbrain.utils.checkpoints import Checkpointer

    from nass.model.loading import load_model

    save = tmp_path_factory.mktemp("save")
    torch.manual_seed(0)
    model = load_model(LIBRIMIX_HPARAMS, TINY)
    Checkpointer(save, {"encoder": model.encoder, "masknet": model.masknet,
                        "decoder": model.decoder}).save_checkpoint(meta={"si-snr": -1.0})
    return save


def separate(checkpoint, *args):
    """``nass separate`` with the tiny model of ``checkpoint``; returns the exit status."""
    from nass.cli import main

    return main(["separate", "--hparams", str(LIBRIMIX_HPARAMS), "--checkpoint", str(checkpoint),
                 *TINY_ARGS, *map(str, args)])


@pytest.fixture(scope="session")
def libri2mix(tmp_path_factory):
    return make_librimix(tmp_path_factory.mktemp("data"), num_spks=2, n_mixtures=3, duration=1.0)


@pytest.fixture(scope="session")
def libri3mix(tmp_path_factory):
    return make_librimix(tmp_path_factory.mktemp("data3"), num_spks=3, n_mixtures=2, duration=1.0)


@pytest.fixture(scope="session")
def custom_corpus(tmp_path_factory):
    return make_custom(tmp_path_factory.mktemp("custom"), num_spks=2, n_mixtures=2, duration=1.0)


@pytest.fixture(scope="session")
def wham_corpus(tmp_path_factory):
    return make_wham(tmp_path_factory.mktemp("wham"), n_mixtures=2, duration=1.0)


@pytest.fixture(scope="session")
def whamr_corpus(tmp_path_factory):
    return make_wham(tmp_path_factory.mktemp("whamr"), n_mixtures=2, duration=1.0, reverb=True)


def recipe_command(recipe, hparams, data_folder, output_folder, *extra):
    """The argv of ``python train.py hparams ...`` run with this interpreter, on the CPU."""
    return [
        sys.executable, str(recipe / "train.py"), str(recipe / "hparams" / hparams),
        "--data_folder", str(data_folder), "--output_folder", str(output_folder), *ON_CPU, *extra,
    ]
