"""The ``nass`` command: ``separate`` (outputs, bad inputs, overwriting, mismatches), ``plot``,
``demo``."""

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.utils.checkpoints import Checkpointer

from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY, TINY_ARGS
from nass.cli import main
from nass.inference import Separator, load_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A save/ folder holding one random tiny-model checkpoint (2 speakers + noise)."""
    save = tmp_path_factory.mktemp("save")
    torch.manual_seed(0)
    model = load_model(HPARAMS, TINY)
    Checkpointer(save, {"encoder": model.encoder, "masknet": model.masknet,
                        "decoder": model.decoder}).save_checkpoint(meta={"si-snr": -1.0})
    return save


def voice(seconds, sample_rate, f0=140.0):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))) / sample_rate
    return 0.1 * sum(np.sin(k * phase) / k for k in range(1, 12)) * (np.sin(2 * np.pi * 4 * t) > 0)


def separate(checkpoint, *args):
    return main(["separate", "--hparams", str(HPARAMS), "--checkpoint", str(checkpoint),
                 *TINY_ARGS, *map(str, args)])


@pytest.mark.parametrize("command", ["separate", "plot", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: nass {command}" in capsys.readouterr().out


def test_outputs_are_float_wavs_holding_the_apis_values(checkpoint, tmp_path, capsys):
    mixture = voice(1.2, 16000) + voice(1.2, 16000, f0=210.0)[::-1]
    stereo = np.stack([mixture, 0.5 * mixture], axis=1)
    sf.write(tmp_path / "talk.wav", stereo, 16000, subtype="PCM_16")
    assert separate(checkpoint, tmp_path / "talk.wav", "--out-dir", tmp_path / "out") == 0
    stdout = capsys.readouterr().out
    api = Separator.from_hparams(HPARAMS, checkpoint, overrides=TINY)
    assert f"using checkpoint {api.checkpoint}" in stdout
    expected = api.separate_file(tmp_path / "talk.wav")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "talk_noise.wav", "talk_sources.json", "talk_spk1.wav", "talk_spk2.wav"]
    for name, signal in expected.items():
        path = tmp_path / "out" / f"talk_{name}.wav"
        info = sf.info(path)
        assert (info.subtype, info.samplerate, info.channels) == ("FLOAT", 16000, 1)
        assert info.frames == len(stereo)
        assert np.array_equal(sf.read(path, dtype="float32")[0], signal.numpy())


def test_outputs_go_beside_the_input_and_normalize_scales_them(checkpoint, tmp_path):
    sf.write(tmp_path / "a.flac", voice(0.6, 8000) + voice(0.6, 8000, f0=230.0), 8000)
    assert separate(checkpoint, tmp_path / "a.flac", "--normalize", "--chunk-seconds", "0.25") == 0
    for name in ("spk1", "spk2", "noise"):
        data, rate = sf.read(tmp_path / f"a_{name}.wav")
        assert rate == 8000 and len(data) == 4800
        assert math.isclose(np.abs(data).max(), 0.9, rel_tol=1e-6)


def test_each_bad_input_gets_one_line_and_the_others_are_separated(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "good1.wav", voice(0.5, 8000), 8000)
    sf.write(tmp_path / "good2.wav", voice(0.5, 22050), 22050)
    sf.write(tmp_path / "empty.wav", np.zeros(0), 8000)
    sf.write(tmp_path / "zeros.wav", np.zeros(4000), 8000)
    sf.write(tmp_path / "short.wav", np.full(5, 0.1), 8000)
    (tmp_path / "text.wav").write_text("not audio")
    names = ["good1.wav", "missing.wav", "text.wav", "empty.wav", "short.wav", "zeros.wav", "good2.wav"]
    status = separate(checkpoint, *(tmp_path / n for n in names))
    err = capsys.readouterr().err
    assert status == 1
    lines = [line for line in err.splitlines() if line.startswith("nass separate: error:")]
    reasons = {"missing.wav": "no such file", "text.wav": "cannot be read as audio",
               "empty.wav": "empty", "short.wav": "too short", "zeros.wav": "silent"}
    for name, reason in reasons.items():
        assert sum(f"{tmp_path / name}: {reason}" in line for line in lines) == 1, name
    assert lines[-1] == "nass separate: error: 5 of 7 input(s) failed"
    assert "Traceback" not in err
    for stem in ("good1", "good2"):
        assert all((tmp_path / f"{stem}_{n}.wav").is_file() for n in ("spk1", "spk2", "noise"))
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_existing_outputs_are_kept_without_overwrite(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    (tmp_path / "talk_spk2.wav").write_bytes(b"precious")
    sf.write(tmp_path / "other.wav", voice(0.5, 8000, f0=200.0), 8000)
    assert separate(checkpoint, tmp_path / "talk.wav", tmp_path / "other.wav") == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'talk.wav'}: talk_spk2.wav already exists (use --overwrite to replace)" in err
    assert (tmp_path / "talk_spk2.wav").read_bytes() == b"precious"
    assert not (tmp_path / "talk_spk1.wav").exists()
    assert (tmp_path / "other_spk1.wav").is_file()
    assert separate(checkpoint, tmp_path / "talk.wav", "--overwrite") == 0
    assert sf.info(tmp_path / "talk_spk2.wav").subtype == "FLOAT"


def test_a_checkpoint_of_another_model_is_one_clear_message(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    assert separate(checkpoint, tmp_path / "talk.wav", "--num_spks", "3") == 1
    err = capsys.readouterr().err
    assert err.startswith("nass separate: error: cannot load the model: checkpoint ")
    assert "masknet.ckpt makes 3 masks but the model makes 4" in err
    assert "Traceback" not in err
    assert not (tmp_path / "talk_spk1.wav").exists()


def test_unknown_overrides_and_missing_checkpoints_are_named(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    assert separate(checkpoint, tmp_path / "talk.wav", "--num_spk=3") == 1
    assert "has no setting(s) num_spk to override" in capsys.readouterr().err
    assert separate(tmp_path / "nowhere", tmp_path / "talk.wav") == 1
    assert f"no checkpoint in {tmp_path / 'nowhere'}" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert separate(checkpoint, tmp_path / "talk.wav", "--device", "cuda") == 1
        assert "CUDA is not available" in capsys.readouterr().err


def test_an_override_without_value_is_a_usage_error(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        separate(checkpoint, tmp_path / "talk.wav", "--num_spks")
    assert exit_info.value.code == 2
    assert "hparams override --num_spks needs a value" in capsys.readouterr().err


# --------------------------------------------------------------------------- plot


def test_plot_finds_the_outputs_and_writes_one_png(tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(1.0, 8000) + voice(1.0, 8000, f0=220.0), 8000)
    for k, f0 in ((1, 140.0), (2, 220.0)):
        sf.write(tmp_path / f"talk_spk{k}.wav", voice(1.0, 8000, f0=f0), 8000, subtype="FLOAT")
    sf.write(tmp_path / "talk_noise.wav", 0.01 * np.random.default_rng(0).standard_normal(8000), 8000)
    assert main(["plot", str(tmp_path / "talk.wav"), "-o", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "talk.wav"), str(tmp_path / "talk_spk1.wav")]) == 0
    assert (tmp_path / "talk_spectrograms.png").is_file()
    assert "wrote" in capsys.readouterr().out


def test_plot_with_a_prefix_and_without_outputs(tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    (tmp_path / "out").mkdir()
    sf.write(tmp_path / "out" / "talk_spk1.wav", voice(0.5, 8000), 8000)
    assert main(["plot", str(tmp_path / "talk.wav"), "--prefix", str(tmp_path / "out" / "talk"),
                 "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").is_file()
    assert main(["plot", str(tmp_path / "talk.wav")]) == 1
    assert "no separated outputs found" in capsys.readouterr().err


# --------------------------------------------------------------------------- demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    # --quick --epochs 1: a tiny corpus and model, one epoch (about 20 s on 2 cores).
    assert main(["demo", "--out-dir", str(tmp_path / "demo"), "--quick", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    demo = tmp_path / "demo"
    results = (demo / "results.md").read_text()
    assert "| mixture (no separation) |" in results and "| NASS Sepformer (demo) |" in results
    assert (demo / "train" / "test_results.csv").is_file()
    separated = sorted(p.name for p in (demo / "separated").iterdir())
    stem = Path(separated[0]).stem
    assert separated == sorted([f"{stem}.wav", f"{stem}_noise.wav", f"{stem}_spectrograms.png",
                                f"{stem}_spk1.wav", f"{stem}_spk2.wav"])
    assert "smoke demo, not a benchmark" in out and str(demo) in out


def test_demo_without_the_recipes_folder_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    # A non-editable install has no recipes/ beside the package.
    monkeypatch.setattr("nass.demo.RECIPE_HPARAMS", tmp_path / "recipes" / "none.yaml")
    assert main(["demo", "--out-dir", str(tmp_path / "demo"), "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nass demo: error: nass demo trains with the LibriMix recipe")
    assert "pip install -e ." in err and not (tmp_path / "demo").exists()
