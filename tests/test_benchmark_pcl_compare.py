"""The PCL comparison script's bookkeeping (its training runs are the recipe's, tested elsewhere)."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import pcl_compare  # noqa: E402


def test_parse_log_reads_the_recipes_train_log(tmp_path):
    log = tmp_path / "train_log.txt"
    log.write_text(
        "epoch: 1, lr: 1.00e-03 - train loss: 15.66, train separation_loss: 9.59, "
        "train pcl_loss: 6.07, train pcl_vs_chance: 8.76e-01, train pcl_grad_share: 1.20, "
        "train skipped_steps: 0 - valid si-snr (dB): -5.01\n"
        "epoch: 2, lr: 1.00e-03 - train loss: 2.52, train separation_loss: 2.52, "
        "train pcl_loss: 0.00e+00, train skipped_steps: 0 - valid si-snr (dB): -3.19\n"
        "Epoch loaded: 2 - test si-snr (dB): -0.64\n"
    )
    first, second = pcl_compare.parse_log(log)
    assert first["train_pcl_vs_chance"] == pytest.approx(0.876)
    assert first["train_pcl_grad_share"] == pytest.approx(1.2)
    assert first["valid_si-snr_dB"] == pytest.approx(-5.01)
    assert "train_pcl_vs_chance" not in second


def test_variants_differ_only_in_their_own_options(tmp_path):
    args = pcl_compare.parse_args(["--model", "tiny", "--epochs", "2", "--", "--batch_size", "2"])
    commands = {v: pcl_compare.command(args, tmp_path, tmp_path / v, v, seed=3)
                for v in pcl_compare.VARIANTS}
    shared = commands["baseline"][: -len(pcl_compare.VARIANTS["baseline"]) - 2]
    for variant, argv in commands.items():
        assert argv[: len(shared)] == shared[:6] + [str(tmp_path / variant)] + shared[7:]
        assert argv[-2:] == ["--batch_size", "2"]
    assert "--seed" in shared and shared[shared.index("--seed") + 1] == "3"


def test_runs_made_with_other_settings_are_not_mixed_in(tmp_path):
    pcl_compare.check_work_dir(tmp_path, {"epochs": 2}, overwrite=False)
    (tmp_path / "run-baseline-seed1").mkdir()
    with pytest.raises(SystemExit, match="other settings"):
        pcl_compare.check_work_dir(tmp_path, {"epochs": 3}, overwrite=False)
    assert (tmp_path / "run-baseline-seed1").exists()
    pcl_compare.check_work_dir(tmp_path, {"epochs": 3}, overwrite=True)
    assert not (tmp_path / "run-baseline-seed1").exists()
