"""The WHAM!/WHAMR! recipe: the same nass Brain on the WHAM! layouts."""

import pytest

from conftest import ON_CPU, TINY_DPRNN, TINY_SEPFORMER, WHAM_RECIPE
from nass.training.recipe import parse_arguments, run
from test_training_recipe import check_results, write_release_checkpoint

# Every test here runs the recipe.
pytestmark = pytest.mark.slow


def run_wham(hparams, corpus, out, *extra, tiny=TINY_SEPFORMER):
    return run([str(WHAM_RECIPE / "hparams" / hparams), "--data_folder", str(corpus),
                "--output_folder", str(out), *ON_CPU, *tiny, "--save_audio", "False", *extra])


def test_sepformer_wham_trains_and_evaluates(wham_corpus, tmp_path):
    run_wham("sepformer-wham.yaml", wham_corpus, tmp_path / "s")
    check_results(tmp_path / "s", wham_corpus, split_dir="tt")


def test_dprnn_wham_trains_and_evaluates(wham_corpus, tmp_path):
    run_wham("dprnn-wham.yaml", wham_corpus, tmp_path / "d", tiny=TINY_DPRNN)
    check_results(tmp_path / "d", wham_corpus, split_dir="tt")


def test_sepformer_whamr_uses_reverberant_mixtures(whamr_corpus, tmp_path):
    brain = run_wham("sepformer-whamr.yaml", whamr_corpus, tmp_path / "r")
    assert brain.hparams.dataset_layout.mixture == "mix_both_reverb"
    assert brain.hparams.dataset_layout.targets["s1"] == "s1_anechoic"
    check_results(tmp_path / "r", whamr_corpus, split_dir="tt", mix="mix_both_reverb")
    with pytest.raises(ValueError, match="dynamic_mixing makes anechoic mixtures"):
        run_wham("sepformer-whamr.yaml", whamr_corpus, tmp_path / "r2", "--dynamic_mixing", "True")


def test_release_checkpoint_evaluates_on_wham(wham_corpus, tmp_path):
    out = tmp_path / "release"
    args = [str(WHAM_RECIPE / "hparams" / "sepformer-wham.yaml"), "--data_folder", str(wham_corpus),
            "--output_folder", str(out), *ON_CPU, *TINY_SEPFORMER, "--test_only", "True",
            "--save_audio", "False"]
    _, _, _, donor = parse_arguments(args)
    write_release_checkpoint(out / "save", donor)
    run(args)
    check_results(out, wham_corpus, split_dir="tt")
