"""Shared fixtures: tiny synthetic corpora and the tiny-model overrides of the recipes."""

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
TINY_DPRNN = [
    "--N_encoder_out", "16", "--out_channels", "16", "--rnn_hidden", "8",
    "--num_dual_path_layers", "1", "--chunk_size", "20",
    "--pcl_proj_dim", "16", "--pcl_num_patches", "16", "--training_signal_len", "4000",
    "--N_epochs", "1",
]


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; OpenMP's spinning threads crawl on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    """The argv of ``python train.py hparams ...`` run with this interpreter."""
    return [
        sys.executable, str(recipe / "train.py"), str(recipe / "hparams" / hparams),
        "--data_folder", str(data_folder), "--output_folder", str(output_folder), *extra,
    ]
