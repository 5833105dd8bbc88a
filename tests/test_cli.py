"""The ``nass`` command: ``separate`` (outputs, bad inputs, overwriting, mismatches), ``plot``,
``demo``."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import resolve_references

from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY, separate
from nass.cli import main
from nass.cli.demo import RECIPE_HPARAMS as DEMO_HPARAMS, build_corpus, claim_out_dir
from nass.inference import Separator


pytestmark = pytest.mark.usefixtures("one_thread")


def voice(seconds, sample_rate, f0=140.0):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))) / sample_rate
    return 0.1 * sum(np.sin(k * phase) / k for k in range(1, 12)) * (np.sin(2 * np.pi * 4 * t) > 0)


def ours(stderr):
    """nass's own lines of ``stderr`` (other tests may leave loggers writing there too)."""
    return [line for line in stderr.splitlines() if line.startswith("nass ")]


@pytest.mark.parametrize("command", ["separate", "plot", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: nass {command}" in capsys.readouterr().out


@pytest.mark.slow
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


@pytest.mark.slow
def test_outputs_go_beside_the_input_and_normalize_scales_them(checkpoint, tmp_path):
    sf.write(tmp_path / "a.flac", voice(0.6, 8000) + voice(0.6, 8000, f0=230.0), 8000)
    assert separate(checkpoint, tmp_path / "a.flac", "--normalize", "--chunk-seconds", "0.25") == 0
    for name in ("spk1", "spk2", "noise"):
        data, rate = sf.read(tmp_path / f"a_{name}.wav")
        assert rate == 8000 and len(data) == 4800
        assert math.isclose(np.abs(data).max(), 0.9, rel_tol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", ["1", "4"])
def test_each_bad_input_gets_one_line_and_the_others_are_separated(checkpoint, tmp_path, capsys,
                                                                  batch_size):
    sf.write(tmp_path / "good1.wav", voice(0.5, 8000), 8000)
    sf.write(tmp_path / "good2.wav", voice(0.5, 22050), 22050)
    sf.write(tmp_path / "empty.wav", np.zeros(0), 8000)
    sf.write(tmp_path / "zeros.wav", np.zeros(4000), 8000)
    sf.write(tmp_path / "short.wav", np.full(5, 0.1), 8000)
    (tmp_path / "text.wav").write_text("not audio")
    names = ["good1.wav", "missing.wav", "text.wav", "empty.wav", "short.wav", "zeros.wav", "good2.wav"]
    status = separate(checkpoint, "--batch-size", batch_size, *(tmp_path / n for n in names))
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


@pytest.mark.slow
def test_existing_outputs_are_kept_without_overwrite(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    (tmp_path / "talk_spk2.wav").write_bytes(b"precious")
    sf.write(tmp_path / "other.wav", voice(0.5, 8000, f0=200.0), 8000)
    assert separate(checkpoint, tmp_path / "talk.wav", tmp_path / "other.wav") == 1
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'talk.wav'}: talk_spk2.wav already exists from before this run "
            f"(use --overwrite to replace)") in err
    assert (tmp_path / "talk_spk2.wav").read_bytes() == b"precious"
    assert not (tmp_path / "talk_spk1.wav").exists()
    assert (tmp_path / "other_spk1.wav").is_file()
    assert separate(checkpoint, tmp_path / "talk.wav", "--overwrite") == 0
    assert sf.info(tmp_path / "talk_spk2.wav").subtype == "FLOAT"


@pytest.mark.slow
def test_overwrite_with_another_model_removes_that_inputs_stale_outputs_only(checkpoint, tmp_path,
                                                                            capsys):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    # What a 3-speaker + noise run left, and files of the user's that only look alike.
    for name in ("talk_spk1.wav", "talk_spk2.wav", "talk_spk3.wav", "talk_noise.wav",
                 "talk2_noise.wav", "talk_spk1_edited.wav"):
        sf.write(tmp_path / name, voice(0.2, 8000), 8000)
    baseline = ["--num_spks", "2", "--noise_output", "False", "--pcl_weight", "0"]
    # A checkpoint without a noise output: the 2-speaker baseline.
    from nass.model.loading import load_model
    from speechbrain.utils.checkpoints import Checkpointer
    plain = load_model(HPARAMS, {**TINY, "noise_output": False, "pcl_weight": 0})
    Checkpointer(tmp_path / "plain", {"encoder": plain.encoder, "masknet": plain.masknet,
                                      "decoder": plain.decoder}).save_checkpoint(meta={"si-snr": 0})
    assert separate(tmp_path / "plain", *baseline, tmp_path / "talk.wav") == 1
    assert len(list(tmp_path.glob("talk_*.wav"))) == 5     # refused: nothing removed
    capsys.readouterr()
    assert separate(tmp_path / "plain", *baseline, tmp_path / "talk.wav", "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.glob("talk*.wav")) == [
        "talk.wav", "talk2_noise.wav", "talk_spk1.wav", "talk_spk1_edited.wav", "talk_spk2.wav"]
    err = capsys.readouterr().err
    for name in ("talk_noise.wav", "talk_spk3.wav"):
        assert f"removed {tmp_path / name}, an output of an earlier run" in err


@pytest.mark.slow
def test_ctrl_c_leaves_the_inputs_done_and_no_output_of_the_one_in_progress(
        checkpoint, tmp_path, capsys, monkeypatch):
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, voice(0.5, 8000), 8000)
    import nass.cli.separate as command
    writes = []

    def save_then_interrupt(sources, *args, **kwargs):
        writes.append(list(sources))
        if len(writes) == 5:    # a's 3 sources, then b's first source, then Ctrl-C in b's second
            raise KeyboardInterrupt
        return save_sources(sources, *args, **kwargs)

    save_sources = command.save_sources
    monkeypatch.setattr(command, "save_sources", save_then_interrupt)
    assert separate(checkpoint, tmp_path / "a.wav", tmp_path / "b.wav") == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.wav", "a_noise.wav", "a_sources.json", "a_spk1.wav", "a_spk2.wav", "b.wav"]
    assert ours(capsys.readouterr().err) == [
        f"nass separate: error: interrupted; 1 of 2 input(s) separated (the last: "
        f"{tmp_path / 'a.wav'}); the outputs of the input in progress were removed"]


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
    assert "--num_spk: " in (err := capsys.readouterr().err) and "did you mean --num_spks?" in err
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


@pytest.mark.slow
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


def test_plot_names_a_missing_mixture_and_writes_the_name_it_was_given(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "gone.wav")]) == 1
    assert capsys.readouterr().err == f"nass plot: error: no such mixture file: {tmp_path / 'gone.wav'}\n"
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    sf.write(tmp_path / "talk_spk1.wav", voice(0.5, 8000), 8000)
    assert main(["plot", str(tmp_path / "talk.wav"), "-o", str(tmp_path / "fig")]) == 0
    assert f"wrote {tmp_path / 'fig'}" in capsys.readouterr().out
    assert (tmp_path / "fig").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "fig.png").exists()


def test_plot_warns_of_outputs_of_another_rate_or_length_and_overwrites_only_if_asked(
        tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(1.0, 8000), 8000)
    sf.write(tmp_path / "talk_spk1.wav", voice(1.0, 8000), 8000)
    sf.write(tmp_path / "talk_spk2.wav", voice(1.0, 16000), 16000)
    sf.write(tmp_path / "talk_noise.wav", voice(0.5, 8000), 8000)
    assert main(["plot", str(tmp_path / "talk.wav")]) == 0
    warnings = [line for line in ours(capsys.readouterr().err) if ": warning: " in line]
    assert [line.split(" is ")[0] for line in warnings] == [
        f"nass plot: warning: {tmp_path / 'talk_spk2.wav'}",
        f"nass plot: warning: {tmp_path / 'talk_noise.wav'}"]
    assert "16000 samples at 16000 Hz but the mixture" in warnings[0]
    png = tmp_path / "talk_spectrograms.png"
    png.write_bytes(b"mine")
    assert main(["plot", str(tmp_path / "talk.wav")]) == 1
    assert png.read_bytes() == b"mine"
    assert main(["plot", str(tmp_path / "talk.wav"), "--overwrite"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_usage_shows_the_outputs_are_optional(capsys):
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "MIXTURE.wav [SOURCE.wav ...]" in capsys.readouterr().out


# --------------------------------------------------------------------------- demo


@pytest.mark.slow
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


def test_demo_keeps_a_folder_it_did_not_make(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "train").mkdir(parents=True)
    (out / "train" / "notes.txt").write_text("precious")
    (out / "data" / "Libri2Mix").mkdir(parents=True)
    (out / "data" / "Libri2Mix" / "x.wav").write_bytes(b"precious")
    assert main(["demo", "--out-dir", str(out), "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nass demo: error: --out-dir {out} holds files that nass demo did not make")
    assert (out / "train" / "notes.txt").read_text() == "precious"
    assert (out / "data" / "Libri2Mix" / "x.wav").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["data", "train"]


def test_demo_reclaims_only_its_own_folder(tmp_path):
    out = claim_out_dir(tmp_path / "demo")
    (out / "train").mkdir()
    assert claim_out_dir(out) == out                 # an earlier demo's folder: reused
    assert claim_out_dir(tmp_path / "empty") == tmp_path / "empty"


def test_the_demos_hparams_are_the_recipes(tmp_path):
    # The package's copy is a link to the recipe's file (a wheel stores the file itself).
    assert DEMO_HPARAMS.resolve() == HPARAMS.resolve()
    assert '"assets/*"' in (Path(__file__).parents[1] / "setup.py").read_text()


# --------------------------------------------------------------------------- data loss


@pytest.mark.slow
def test_inputs_that_would_share_outputs_are_refused_before_separating(checkpoint, tmp_path, capsys):
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "talk.wav", voice(0.5, 8000), 8000)
    out = tmp_path / "out"
    out.mkdir()
    assert separate(checkpoint, tmp_path / "d1" / "talk.wav", tmp_path / "d2" / "talk.wav",
                    "--out-dir", out, "--overwrite") == 1
    assert ours(capsys.readouterr().err) == [
        f"nass separate: error: {tmp_path / 'd1' / 'talk.wav'} and {tmp_path / 'd2' / 'talk.wav'} "
        f"would both be written to {out / 'talk_spk1.wav'}, ...; rename one, or separate them "
        f"into different --out-dir folders; nothing was separated"]
    assert not list(out.iterdir())
    sf.write(tmp_path / "d1" / "talk.flac", voice(0.5, 8000), 8000)
    assert separate(checkpoint, tmp_path / "d1" / "talk.wav", tmp_path / "d1" / "talk.flac") == 1
    assert "would both be written to" in capsys.readouterr().err
    assert separate(checkpoint, tmp_path / "d2" / "talk.wav", tmp_path / "d2" / "talk.wav") == 1
    assert "is given twice" in capsys.readouterr().err
    sf.write(tmp_path / "d2" / "talk_spk1.wav", voice(0.5, 8000), 8000)
    kept = (tmp_path / "d2" / "talk_spk1.wav").read_bytes()
    assert separate(checkpoint, tmp_path / "d2" / "talk.wav", tmp_path / "d2" / "talk_spk1.wav",
                    "--overwrite") == 1
    assert "which is an input of this run" in capsys.readouterr().err
    assert (tmp_path / "d2" / "talk_spk1.wav").read_bytes() == kept
    assert sorted(p.name for p in (tmp_path / "d1").iterdir()) == ["talk.flac", "talk.wav"]
    # Beside their inputs (no --out-dir), the two talk.wav keep both outputs.
    (tmp_path / "d2" / "talk_spk1.wav").unlink()
    assert separate(checkpoint, tmp_path / "d1" / "talk.wav", tmp_path / "d2" / "talk.wav") == 0
    assert all((tmp_path / d / "talk_noise.wav").is_file() for d in ("d1", "d2"))


@pytest.mark.slow
def test_an_unusable_out_dir_is_reported_once_before_separating(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", voice(0.5, 8000), 8000)
    sf.write(tmp_path / "b.wav", voice(0.5, 8000, f0=200.0), 8000)
    (tmp_path / "file").write_text("x")
    for out_dir, reason in ((tmp_path / "file", "is a file, not a folder"),
                            (tmp_path / "file" / "sub", "cannot be written to")):
        assert separate(checkpoint, tmp_path / "a.wav", tmp_path / "b.wav", "--out-dir", out_dir) == 1
        lines = ours(capsys.readouterr().err)
        assert len(lines) == 1 and f"--out-dir {out_dir} {reason}" in lines[0], lines
    assert not list(tmp_path.glob("*_spk1.wav"))


def test_parts_left_by_a_killed_run_are_removed(checkpoint, tmp_path):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    stale = [tmp_path / ".talk_spk1.wav.0123abcd.part", tmp_path / ".talk_noise.wav.deadbeef.part"]
    for path in stale:
        path.write_bytes(b"half a file")
    other = tmp_path / ".notes.txt.0123abcd.part"
    other.write_bytes(b"someone else's")
    assert separate(checkpoint, tmp_path / "talk.wav") == 0
    assert not any(p.exists() for p in stale) and other.exists()


# --------------------------------------------------------------------------- silently wrong


def test_a_truncated_wav_is_separated_with_a_warning(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "whole.wav", voice(1.0, 8000), 8000, subtype="PCM_16")
    whole = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: 44 + 2 * 3000])  # header says 8000 frames
    assert separate(checkpoint, tmp_path / "cut.wav", tmp_path / "whole.wav") == 0
    warnings = [ln for ln in ours(capsys.readouterr().err) if ": truncated: " in ln]
    assert warnings == [
        f"nass separate: warning: {tmp_path / 'cut.wav'}: truncated: its header declares 8000 "
        f"samples (1.00 s) but only 3000 (0.38 s) are in the file; using those"]
    assert sf.info(tmp_path / "cut_spk1.wav").frames == 3000


@pytest.mark.parametrize("option", [["--lr", "0.1"], ["--batch_size", "4"], ["--data_folder", "x"]])
def test_options_that_change_nothing_when_separating_are_refused(checkpoint, tmp_path, capsys, option):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    assert separate(checkpoint, tmp_path / "talk.wav", *option) == 1
    assert f"{option[0]} changes nothing when separating" in capsys.readouterr().err
    assert not (tmp_path / "talk_spk1.wav").exists()


# --------------------------------------------------------------------------- what a person can act on


def test_hparams_that_are_not_yaml_are_named(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    (tmp_path / "bad.yaml").write_text("seed: [1\nnum_spks: 2\n")
    for hparams, reason in ((tmp_path / "talk.wav", "not a YAML hparams file"),
                            (tmp_path / "bad.yaml", "not a YAML hparams file: cannot parse it")):
        assert main(["separate", "--hparams", str(hparams), "--checkpoint", str(checkpoint),
                     str(tmp_path / "talk.wav")]) == 1
        assert f"{hparams} is {reason}" in capsys.readouterr().err


def test_a_runs_saved_hyperparams_yaml_separates_and_refuses_overrides(checkpoint, tmp_path, capsys):
    # What speechbrain.create_experiment_directory writes to <output_folder>/hyperparams.yaml.
    resolved = resolve_references(open(HPARAMS), {**TINY, "data_folder": str(tmp_path)})
    saved = tmp_path / "hyperparams.yaml"
    saved.write_text(f"# Generated 2026-11-26 from:\n# {HPARAMS}\n# yamllint disable\n"
                     + resolved.getvalue())
    sf.write(tmp_path / "talk.wav", voice(0.5, 8000), 8000)
    args = ["separate", "--hparams", str(saved), "--checkpoint", str(checkpoint)]
    assert main(args + [str(tmp_path / "talk.wav")]) == 0
    assert main(args + ["--num_spks", "3", str(tmp_path / "talk.wav"), "--overwrite"]) == 1
    assert "the copy of a run's settings that SpeechBrain saved" in capsys.readouterr().err


def test_separate_does_not_load_the_training_stack():
    code = ("import sys, nass.cli; "
            "print(sorted(m for m in ('nass.training.recipe', 'nass.training.brain', 'nass.cli.demo', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_demo_corpus_mixtures_sum_exactly_in_the_files(tmp_path):
    # Each source is written as PCM_16 on its own; the sum holds only if they were rounded first.
    folder = build_corpus(tmp_path, counts={"test": 2}) / "wav8k" / "min" / "test"
    for path in (folder / "mix_both").glob("*.wav"):
        sig = {sub: sf.read(str(folder / sub / path.name))[0]
               for sub in ("mix_both", "mix_clean", "s1", "s2", "noise")}
        np.testing.assert_array_equal(sig["mix_both"], sig["s1"] + sig["s2"] + sig["noise"])
        np.testing.assert_array_equal(sig["mix_clean"], sig["s1"] + sig["s2"])
