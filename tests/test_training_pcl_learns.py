"""Does the PCL term learn? A short LibriMix recipe run on real speech, frame vs scalar patches.

The corpus is the one ``nass demo`` builds from the read speech and real noise
shipped in ``nass/assets`` (24 training mixtures of 0.5 s crops: 3 epochs are
72 steps). The reference's scalar patches stay at chance (``pcl_vs_chance``
1.00, a PCL gradient at the mask network ~1e-4 of the separation term's);
frame patches leave it.
"""

import re

import pytest

from conftest import LIBRIMIX_HPARAMS, ON_CPU, TINY_ARGS
from nass.cli.demo import build_corpus
from nass.training.recipe import run

# Every test here runs the recipe.
pytestmark = pytest.mark.slow

EPOCHS = 3


@pytest.fixture(scope="module")
def real_speech(tmp_path_factory):
    counts = {"train-100": 24, "dev": 2, "test": 2}
    return build_corpus(tmp_path_factory.mktemp("real"), seed=0, counts=counts, train_seconds=1.0)


def train_log_stats(folder):
    """``{stat: [value per epoch]}`` of the ``train ...`` stats in a recipe's train log."""
    stats = {}
    for line in (folder / "train_log.txt").read_text().splitlines():
        if line.startswith("epoch:"):
            for name, value in re.findall(r"train ([\w-]+): ([-+0-9.e]+)", line):
                stats.setdefault(name, []).append(float(value))
    return stats


def short_run(corpus, out, patch):
    run([str(LIBRIMIX_HPARAMS), "--data_folder", str(corpus), "--output_folder", str(out),
         *ON_CPU, *TINY_ARGS, "--pcl_proj_dim", "128", "--pcl_num_patches", "16",
         "--training_signal_len", "4000", "--N_epochs", str(EPOCHS), "--lr", "0.001",
         "--pcl_patch", patch, "--pcl_grad_every", "12", "--save_audio", "False",
         "--noprogressbar", "True"])
    return train_log_stats(out)


def test_frame_patches_leave_chance_and_scalar_patches_do_not(real_speech, tmp_path, one_thread):
    frame = short_run(real_speech, tmp_path / "frame", "frame")
    scalar = short_run(real_speech, tmp_path / "scalar", "scalar")
    for stats in (frame, scalar):
        assert len(stats["pcl_vs_chance"]) == EPOCHS and len(stats["pcl_grad_share"]) == EPOCHS
    last = slice(1, None)   # the last two epochs
    frame_ratio = sum(frame["pcl_vs_chance"][last]) / (EPOCHS - 1)
    scalar_ratio = sum(scalar["pcl_vs_chance"][last]) / (EPOCHS - 1)
    assert frame_ratio <= 0.95, frame
    assert scalar_ratio == pytest.approx(1.0, abs=0.005), scalar
    # The PCL term steers the mask network with frame patches, and next to nothing with scalar ones.
    assert min(frame["pcl_grad_share"]) > 100 * max(scalar["pcl_grad_share"]), (frame, scalar)
