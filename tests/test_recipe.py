"""The LibriMix recipe end to end on tiny synthetic corpora and tiny models."""

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch
import yaml

from conftest import LIBRIMIX_RECIPE, TINY_DPRNN, TINY_SEPFORMER, recipe_command
from nass.checkpoints import CheckpointMismatchError, checkpoint_problems
from nass.data.synthetic import make_custom, make_librispeech_like, make_noise_folder
from nass.recipe import RecipeError, load_hparams, run

SEPFORMER = str(LIBRIMIX_RECIPE / "hparams" / "sepformer-libri2mix.yaml")
RESUMABLE = ["encoder", "decoder", "masknet", "patchsamplenet", "counter", "lr_scheduler",
             "brain", "optimizer"]


def results(folder):
    with open(folder / "test_results.csv") as fin:
        return list(csv.DictReader(fin))


def check_results(folder, corpus, split_dir="test", mix="mix_both"):
    rows = results(folder)
    ids = sorted(p.stem for p in (corpus / "wav8k" / "min" / split_dir / mix).glob("*.wav")) \
        if (corpus / "wav8k").exists() else sorted(p.stem for p in (corpus / "test" / "mixture").glob("*.wav"))
    assert [r["snt_id"] for r in rows[:-1]] == ids
    assert rows[-1]["snt_id"] == "avg"
    for row in rows:
        assert all(math.isfinite(float(row[k])) for k in ("sdr", "sdr_i", "si-snr", "si-snr_i"))
    mean = sum(float(r["si-snr_i"]) for r in rows[:-1]) / len(ids)
    assert float(rows[-1]["si-snr_i"]) == pytest.approx(mean, abs=1e-6)
    return rows


def run_recipe(hparams, corpus, out, *extra, tiny=TINY_SEPFORMER):
    return run([str(LIBRIMIX_RECIPE / "hparams" / hparams), "--data_folder", str(corpus),
                "--output_folder", str(out), *tiny, *extra])


def test_sepformer_nass_trains_and_evaluates(libri2mix, tmp_path):
    out = tmp_path / "run"
    run_recipe("sepformer-libri2mix.yaml", libri2mix, out, "--n_audio_to_save", "1")
    check_results(out, libri2mix)
    log = (out / "train_log.txt").read_text()
    assert "train separation_loss" in log and "train pcl_loss" in log
    pcl = float(log.split("train pcl_loss: ")[1].split(",")[0])
    assert pcl > 0
    assert len(list((out / "save").glob("CKPT+*"))) == 1
    saved = sorted(p.name for p in (out / "audio_results").iterdir())
    assert len(saved) == 4 and any(n.endswith("_noise.wav") for n in saved)
    # The log shows SI-SNR in dB (higher is better); the checkpoint keeps the release's loss key.
    logged = float(log.split("valid si-snr (dB): ")[1].split()[0])
    meta = yaml.safe_load(next((out / "save").glob("CKPT+*/CKPT.yaml")).read_text())
    assert logged == pytest.approx(-meta["si-snr"], abs=0.006)
    test_logged = float(log.split("test si-snr (dB): ")[1].split()[0])
    assert test_logged == pytest.approx(float(results(out)[-1]["si-snr"]), abs=0.006)

    # A rerun that does not fit the finished run is refused before its record is rewritten.
    record = (out / "hyperparams.yaml").read_bytes()
    with pytest.raises(CheckpointMismatchError):
        run_recipe("sepformer-libri2mix.yaml", libri2mix, out, "--noise_output", "False",
                   "--pcl_weight", "0")
    assert (out / "hyperparams.yaml").read_bytes() == record


def test_plain_baseline_has_no_noise_output_and_no_pcl(libri2mix, tmp_path):
    out = tmp_path / "base"
    brain = run_recipe("sepformer-libri2mix.yaml", libri2mix, out, "--noise_output", "False",
                       "--pcl_weight", "0", "--save_audio", "False")
    assert brain.hparams.MaskNet.num_spks == 2
    assert "patchsamplenet" not in brain.modules
    check_results(out, libri2mix)
    assert "pcl_loss: 0.00" in (out / "train_log.txt").read_text()


def test_dprnn_with_batch_of_two_and_fixed_noise_slot(libri2mix, tmp_path, capfd):
    out = tmp_path / "dprnn"
    run_recipe("dprnn-libri2mix.yaml", libri2mix, out, "--batch_size", "2",
               "--noise_assignment", "fixed", "--save_audio", "False", "--noprogressbar", "True",
               tiny=TINY_DPRNN)
    check_results(out, libri2mix)
    assert "it/s" not in capfd.readouterr().err   # no bar: not for training, nor for the test


def test_padded_batches_train_with_pcl(libri2mix, tmp_path):
    out = tmp_path / "padded"
    run_recipe("sepformer-libri2mix.yaml", libri2mix, out, "--batch_size", "3",
               "--limit_training_signal_len", "False", "--save_audio", "False")
    log = (out / "train_log.txt").read_text()
    assert float(log.split("train pcl_loss: ")[1].split(",")[0]) > 0
    check_results(out, libri2mix)


def test_three_speakers(libri3mix, tmp_path):
    out = tmp_path / "three"
    brain = run_recipe("sepformer-libri3mix.yaml", libri3mix, out, "--save_audio", "False")
    assert brain.hparams.MaskNet.num_spks == 4
    check_results(out, libri3mix)


def test_custom_layout(custom_corpus, tmp_path):
    out = tmp_path / "custom"
    brain = run_recipe("sepformer-custom.yaml", custom_corpus, out, "--save_audio", "False",
                       "--ckpt_interval_steps", "1")
    check_results(out, custom_corpus)
    # Steps alone replace the hparams' minutes (SpeechBrain refuses both at once).
    assert (brain.ckpt_interval_steps, brain.ckpt_interval_minutes) == (1, 0)


def test_short_and_silent_utterances_are_evaluated_as_nan_with_a_warning(tmp_path, capfd):
    corpus = make_custom(tmp_path / "custom", num_spks=2, n_mixtures=4, duration=1.0)
    for split, stem, length, silent in (("test", 0, 200, None), ("test", 1, None, "source2"),
                                         ("test", 3, 10, None), ("train", 0, 40, None)):
        folder = corpus / split
        name = sorted((folder / "mixture").glob("*.wav"))[stem].name
        parts = {d: sf.read(folder / d / name, dtype="float64")[0]
                 for d in ("source1", "source2", "noise")}
        # From the middle: the synthetic speakers may start with silence.
        parts = {d: (0 * x if d == silent else x)[2000:][:length] for d, x in parts.items()}
        for d, x in {**parts, "mixture": sum(parts.values())}.items():
            sf.write(folder / d / name, x, 8000, subtype="FLOAT")
    out = tmp_path / "odd"
    # A training batch whose shortest utterance (40 samples) is under PCL's 5-frame window.
    run_recipe("sepformer-custom.yaml", corpus, out, "--save_audio", "False", "--batch_size", "3",
               "--limit_training_signal_len", "False")
    rows = results(out)
    ids = sorted(p.stem for p in (corpus / "test" / "mixture").glob("*.wav"))
    short, silent, fine, tiny = ({k: float(v) for k, v in r.items() if k != "snt_id"}
                                 for r in rows[:4])
    assert math.isfinite(short["si-snr"]) and math.isnan(short["sdr"])
    assert all(math.isnan(v) for v in silent.values()) and all(math.isnan(v) for v in tiny.values())
    assert all(math.isfinite(v) for v in fine.values())
    avg = rows[-1]
    assert float(avg["sdr"]) == pytest.approx(fine["sdr"], abs=1e-6)
    assert float(avg["si-snr"]) == pytest.approx((short["si-snr"] + fine["si-snr"]) / 2, abs=1e-6)
    warnings = "".join(capfd.readouterr())  # SpeechBrain's logging setup writes to the console
    assert f"test utterance {ids[0]}: 200 samples, fewer than the 512 BSS-Eval needs" in warnings
    assert f"test utterance {ids[1]}: reference(s) [1] all zero" in warnings
    assert f"test utterance {ids[3]}: 10 samples, fewer than the encoder's 16" in warnings
    assert (f"The avg sdr leaves out 3 of 4 utterance(s) where it is NaN: {ids[0]}, {ids[1]}, "
            f"{ids[3]}") in warnings


def test_bf16_autocast_on_cpu_keeps_pcl(libri2mix, tmp_path):
    out = tmp_path / "bf16"
    run_recipe("sepformer-libri2mix.yaml", libri2mix, out, "--precision", "bf16",
               "--save_audio", "False")
    check_results(out, libri2mix)
    log = (out / "train_log.txt").read_text()
    assert float(log.split("train pcl_loss: ")[1].split(",")[0]) > 0


def test_fp16_on_cpu_is_a_clear_error(libri2mix, tmp_path):
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device"):
        run_recipe("sepformer-libri2mix.yaml", libri2mix, tmp_path / "fp16", "--precision", "fp16",
                   "--device", "cpu")


def test_dynamic_mixing(libri2mix, tmp_path):
    speech = make_librispeech_like(tmp_path / "LibriSpeech", n_speakers=3, duration=1.0)
    noise = make_noise_folder(tmp_path / "noise", n_files=2, duration=1.5)
    out = tmp_path / "dm"
    run_recipe("sepformer-libri2mix.yaml", libri2mix, out, "--dynamic_mixing", "True",
               "--base_folder_dm", str(speech), "--noise_folder_dm", str(noise),
               "--dm_examples_per_epoch", "3", "--save_audio", "False")
    check_results(out, libri2mix)
    assert not (out / "save" / "train.csv").exists()


def write_release_checkpoint(save, hparams, si_snr=-12.5):
    """A checkpoint folder exactly as the reference release ships it (SpeechBrain 0.5 files)."""
    ckpt = save / "CKPT+2023-05-17+10-12-33+00"
    ckpt.mkdir(parents=True)
    modules = {k: hparams[v] for k, v in (("encoder", "Encoder"), ("masknet", "MaskNet"),
                                           ("decoder", "Decoder"), ("patchsamplenet", "patchsamplenet"))}
    params = []
    for name, module in modules.items():
        torch.save(module.state_dict(), ckpt / f"{name}.ckpt")
        params += list(module.parameters())
    (ckpt / "counter.ckpt").write_text("200")
    torch.save({"losses": [-12.0, -12.5], "anchor": -12.5, "patience_counter": 1},
               ckpt / "lr_scheduler.ckpt")
    (ckpt / "brain.ckpt").write_text(yaml.safe_dump(
        {"step": 13900, "avg_train_loss": -14.2, "optimizer_step": 13900}))
    torch.save(torch.optim.Adam(params, lr=1.5e-4).state_dict(), ckpt / "optimizer.ckpt")
    torch.save(torch.amp.GradScaler("cpu", enabled=False).state_dict(), ckpt / "scaler.ckpt")
    (ckpt / "CKPT.yaml").write_text(yaml.safe_dump(
        {"end-of-epoch": True, "si-snr": si_snr, "unixtime": 1684318353.0}))
    return ckpt


def test_release_layout_checkpoint_is_evaluated_unchanged(libri2mix, tmp_path):
    out = tmp_path / "results" / "sepformer-libri2mix" / "1234"
    args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(out),
            *TINY_SEPFORMER, "--test_only", "True", "--save_audio", "False", "--seed", "7"]
    _, _, _, donor = load_hparams(args)
    ckpt = write_release_checkpoint(out / "save", donor)
    brain = run(args[:-2] + ["--seed", "1234"])
    for name in ("encoder", "masknet", "decoder", "patchsamplenet"):
        saved = torch.load(ckpt / f"{name}.ckpt")
        for key, value in brain.checkpointer.recoverables[name].state_dict().items():
            torch.testing.assert_close(value, saved[key])
    assert brain.hparams.epoch_counter.current == 200
    rows = check_results(out, libri2mix)

    # The same numbers, worked out directly with the donor model and the metrics.
    from nass.metrics import utterance_metrics
    from nass.pit import align
    import soundfile as sf

    model = donor["separator"].eval()
    first = rows[0]["snt_id"]
    base = libri2mix / "wav8k" / "min" / "test"
    mix = torch.from_numpy(sf.read(base / "mix_both" / f"{first}.wav", dtype="float32")[0])
    refs = torch.stack([torch.from_numpy(sf.read(base / d / f"{first}.wav", dtype="float32")[0])
                        for d in ("s1", "s2", "noise")], dim=-1)
    with torch.no_grad():
        est = model(mix[None])
    assignment, _ = donor["objective"].assign(est, refs[None])
    expected = utterance_metrics(align(est, assignment)[0, :, :2], refs[:, :2], mix)
    for key in ("si-snr", "si-snr_i", "sdr", "sdr_i"):
        assert float(rows[0][key]) == pytest.approx(expected[key], abs=1e-4)


def test_checkpoint_that_does_not_fit_is_one_clear_error(libri2mix, tmp_path):
    out = tmp_path / "mismatch"
    args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(out),
            *TINY_SEPFORMER, "--test_only", "True"]
    _, _, _, donor = load_hparams(args)
    write_release_checkpoint(out / "save", donor)
    with pytest.raises(CheckpointMismatchError, match="makes 3 masks but the model makes 4") as err:
        run(args + ["--num_spks", "3"])
    assert "sepformer-libri2mix.yaml" in str(err.value) and "CKPT+2023-05-17" in str(err.value)
    dprnn = str(LIBRIMIX_RECIPE / "hparams" / "dprnn-libri2mix.yaml")
    with pytest.raises(CheckpointMismatchError, match=r"masknet.ckpt is a Sepformer .* but masknet is a DPRNN"):
        run([dprnn, "--data_folder", str(libri2mix), "--output_folder", str(out), *TINY_DPRNN,
             "--test_only", "True"])


def test_test_only_without_checkpoint_says_so(libri2mix, tmp_path):
    with pytest.raises(RecipeError, match="holds no CKPT"):
        run_recipe("sepformer-libri2mix.yaml", libri2mix, tmp_path / "none", "--test_only", "True")


def test_killed_run_resumes_from_its_last_checkpoint(libri2mix, tmp_path):
    out = tmp_path / "killed"
    tiny = TINY_SEPFORMER[: TINY_SEPFORMER.index("--N_epochs")]
    cmd = recipe_command(LIBRIMIX_RECIPE, "sepformer-libri2mix.yaml", libri2mix, out,
                         *tiny, "--save_audio", "False", "--N_epochs", "30")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if "epoch: 2," in (out / "train_log.txt").read_text() if (out / "train_log.txt").exists() else "":
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = (out / "train_log.txt").read_text().count("epoch: ")
    assert 2 <= done < 30, "the run should have been killed mid-way"
    # The kill may land while a checkpoint is written; resume from the last complete one.
    complete = [int((c / "counter.ckpt").read_text()) for c in (out / "save").glob("CKPT+*")
                if not checkpoint_problems(c, RESUMABLE)]
    last = max(complete)
    subprocess.run(cmd[:-2] + ["--N_epochs", str(done + 1)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    log = (out / "train_log.txt").read_text()
    epochs = [int(line.split("epoch: ")[1].split(",")[0]) for line in log.splitlines()
              if line.startswith("epoch: ")]
    assert epochs == list(range(1, done + 1)) + list(range(last + 1, done + 2)), log
    check_results(out, libri2mix)


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun not installed")
def test_two_process_ddp_with_gloo(libri2mix, tmp_path):
    out = tmp_path / "ddp"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2"] + recipe_command(
        LIBRIMIX_RECIPE, "sepformer-libri2mix.yaml", libri2mix, out, *TINY_SEPFORMER,
        "--distributed_backend", "gloo", "--device", "cpu", "--save_audio", "False")[1:]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_results(out, libri2mix)
    assert (out / "train_log.txt").read_text().count("epoch: 1,") == 1
