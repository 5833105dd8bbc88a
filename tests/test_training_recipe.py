"""The LibriMix recipe end to end on tiny synthetic corpora and tiny models."""

import csv
import hashlib
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch
import yaml

from conftest import (LIBRIMIX_RECIPE, ON_CPU, REPO, TINY, TINY_ARGS, TINY_DPRNN, TINY_SEPFORMER,
                      recipe_command)
from nass.model.checkpoints import CheckpointMismatchError, NoCheckpointError, checkpoint_problems
from nass.data.dynamic_mixing import DynamicMixer
from nass.data.synthetic import make_custom, make_librispeech_like, make_noise_folder
from nass.inference import Separator
from nass.metrics import utterance_metrics
from nass.losses.pit import align
from nass.training.recipe import RUN_LOCK, RecipeError, parse_arguments, run

# Every test here runs the recipe.
pytestmark = pytest.mark.slow

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
                "--output_folder", str(out), *ON_CPU, *tiny, *extra])


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
    # threshold 1000: every utterance is "below the threshold"; the reference then
    # trains on the full loss rather than skipping the step.
    brain = run_recipe("sepformer-libri2mix.yaml", libri2mix, out, "--noise_output", "False",
                       "--pcl_weight", "0", "--save_audio", "False", "--threshold", "1000")
    assert brain.hparams.MaskNet.num_spks == 2
    assert "patchsamplenet" not in brain.modules and brain.hparams.patchsamplenet is None
    assert "patchsamplenet" not in brain.checkpointer.recoverables
    check_results(out, libri2mix)
    log = (out / "train_log.txt").read_text()
    assert "pcl_loss: 0.00" in log and "skipped_steps: 0" in log


def test_baseline_starts_from_speechbrains_initialisation(libri2mix, tmp_path, monkeypatch):
    """Built with the seed, then every layer reset as SpeechBrain's recipe does; nothing for PCL."""
    from nass.training import recipe

    started = {}

    class Started(Exception):
        """Raised at the start of training: the start is all this test needs."""

    def fit(brain, *args, **kwargs):
        started.update({k: v.clone() for k, v in brain.separator_module.state_dict().items()})
        raise Started

    monkeypatch.setattr(recipe.SeparationBrain, "fit", fit)
    args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(tmp_path / "b"),
            *ON_CPU, *TINY_SEPFORMER, "--noise_output", "False", "--pcl_weight", "0"]
    with pytest.raises(Started):
        run(args)
    _, _, _, fresh = parse_arguments(args)          # seeds torch as the recipe does
    built = {k: v.clone() for k, v in fresh["separator"].state_dict().items()}
    separator = fresh["separator"]
    for part in (separator.encoder, separator.decoder, separator.masknet):   # SpeechBrain's order
        _reset_with_descendants(part)
    expected = separator.state_dict()
    assert all(torch.equal(started[k], expected[k]) for k in expected)
    assert sum(not torch.equal(built[k], expected[k]) for k in expected) > len(expected) // 4


def _reset_with_descendants(layer):
    """SpeechBrain's recipes' ``reset_layer_recursively``, written out."""
    if hasattr(layer, "reset_parameters"):
        layer.reset_parameters()
    for child in layer.modules():
        if child is not layer:
            _reset_with_descendants(child)


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


def test_tf32_runs_as_speechbrains_fp32_with_tf32_on(tmp_path, tf32_flags):
    from nass.training import recipe

    # Flags only (setting them needs no GPU): tests/test_gpu.py trains in tf32 on one.
    args = [SEPFORMER, "--data_folder", str(tmp_path), "--output_folder", str(tmp_path / "out"),
            *TINY_ARGS, "--device", "cuda:0"]
    for precision, tf32 in (("tf32", True), ("fp32", False), ("bf16", False)):
        _, run_opts, _, hparams = parse_arguments(args + [f"--precision={precision}"])
        assert run_opts.precision == precision
        given = recipe._set_precision(hparams, run_opts)
        assert given.precision == ("fp32" if precision == "tf32" else precision)
        assert "precision" in given.overridden_args   # over the hparams' precision, as given
        assert [flag.allow_tf32 for flag in tf32_flags] == [tf32, tf32], precision


def _fingerprint(signal):
    return hashlib.sha1(signal.numpy().tobytes()).hexdigest()


def test_dynamic_mixing_resumed_run_continues_with_the_next_epoch(libri2mix, tmp_path, monkeypatch):
    speech = make_librispeech_like(tmp_path / "LibriSpeech", n_speakers=3, duration=1.0)
    noise = make_noise_folder(tmp_path / "noise", n_files=2, duration=1.5)
    read = []
    mixture = DynamicMixer.mixture

    def recording(mixer, epoch, index):
        example = mixture(mixer, epoch, index)
        read.append((epoch, index, _fingerprint(example["mix"])))
        return example

    monkeypatch.setattr(DynamicMixer, "mixture", recording)
    out = tmp_path / "dm"
    tiny = TINY_SEPFORMER[: TINY_SEPFORMER.index("--N_epochs")]
    args = ["--dynamic_mixing", "True", "--base_folder_dm", str(speech), "--noise_folder_dm",
            str(noise), "--dm_examples_per_epoch", "3", "--save_audio", "False"]
    run_recipe("sepformer-libri2mix.yaml", libri2mix, out, *args, "--N_epochs", "1", tiny=tiny)
    check_results(out, libri2mix)
    assert not (out / "save" / "train.csv").exists()
    first, read[:] = list(read), []
    run_recipe("sepformer-libri2mix.yaml", libri2mix, out, *args, "--N_epochs", "2", tiny=tiny)
    assert [(e, i) for e, i, _ in first] == [(1, 0), (1, 1), (1, 2)]
    assert [(e, i) for e, i, _ in read] == [(2, 0), (2, 1), (2, 2)]
    assert not {f for *_, f in read} & {f for *_, f in first}
    # What the resumed run trained on is what an uninterrupted run reads in epoch 2.
    fresh = DynamicMixer(speech, noise, num_spks=2, sample_rate=8000, length=4000, seed=1234)
    assert [f for *_, f in read] == [_fingerprint(mixture(fresh, 2, i)["mix"]) for i in range(3)]


def write_release_checkpoint(save, hparams, meta=None):
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
    meta = meta or {"end-of-epoch": True, "si-snr": -12.5}
    (ckpt / "CKPT.yaml").write_text(yaml.safe_dump({**meta, "unixtime": 1684318353.0}))
    return ckpt


def test_release_layout_checkpoint_is_evaluated_unchanged(libri2mix, tmp_path):
    out = tmp_path / "results" / "sepformer-libri2mix" / "1234"
    args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(out),
            *ON_CPU, *TINY_SEPFORMER, "--test_only", "True", "--save_audio", "False", "--seed", "7"]
    _, _, _, donor = parse_arguments(args)
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
    from nass.losses.pit import align
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
            *ON_CPU, *TINY_SEPFORMER, "--test_only", "True"]
    _, _, _, donor = parse_arguments(args)
    write_release_checkpoint(out / "save", donor)
    with pytest.raises(CheckpointMismatchError, match="makes 3 masks but the model makes 4") as err:
        run(args + ["--num_spks", "3"])
    assert "sepformer-libri2mix.yaml" in str(err.value) and "CKPT+2023-05-17" in str(err.value)
    dprnn = str(LIBRIMIX_RECIPE / "hparams" / "dprnn-libri2mix.yaml")
    with pytest.raises(CheckpointMismatchError, match=r"masknet.ckpt is a Sepformer .* but masknet is a DPRNN"):
        run([dprnn, "--data_folder", str(libri2mix), "--output_folder", str(out), *ON_CPU, *TINY_DPRNN,
             "--test_only", "True"])


def test_test_only_without_checkpoint_says_so(libri2mix, tmp_path):
    with pytest.raises(RecipeError, match="holds no CKPT"):
        run_recipe("sepformer-libri2mix.yaml", libri2mix, tmp_path / "none", "--test_only", "True")


def test_test_only_on_an_intra_epoch_checkpoint_gives_what_separate_gives(libri2mix, tmp_path):
    out = tmp_path / "intra"
    args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(out),
            *ON_CPU, *TINY_SEPFORMER, "--save_audio", "False", "--seed", "7"]
    _, _, _, donor = parse_arguments(args)
    # What SpeechBrain saves every ckpt_interval_minutes inside an epoch: no si-snr.
    intra = write_release_checkpoint(
        out / "save", donor, meta={"end-of-epoch": False, "brain_intra_epoch_ckpt": True})
    run(args[:-2] + ["--seed", "1234", "--test_only", "True"])
    assert (out / "test_checkpoint.txt").read_text().strip() == str(intra.resolve())
    assert "which has no si-snr: an intra-epoch checkpoint" in (out / "log.txt").read_text()
    rows = check_results(out, libri2mix)

    separator = Separator.from_hparams(SEPFORMER, out / "save", overrides=TINY)
    assert separator.checkpoint == intra
    base = libri2mix / "wav8k" / "min" / "test"
    for row in rows[:-1]:
        mix, refs = _read_test_utterance(base, row["snt_id"])
        with torch.no_grad():
            est = separator.model(mix[None])
        assignment, _ = donor["objective"].assign(est, refs[None])
        expected = utterance_metrics(align(est, assignment)[0, :, :2], refs[:, :2], mix)
        for key in ("si-snr", "si-snr_i", "sdr", "sdr_i"):
            assert float(row[key]) == pytest.approx(expected[key], abs=1e-4)


def _read_test_utterance(base, snt_id):
    """``(mix [T], [s1, s2, noise] [T, 3])`` of a Libri2Mix test utterance."""
    def read(folder):
        return torch.from_numpy(sf.read(base / folder / f"{snt_id}.wav", dtype="float32")[0])

    return read("mix_both"), torch.stack([read(d) for d in ("s1", "s2", "noise")], dim=-1)


def test_test_only_without_a_loadable_checkpoint_writes_no_csv(libri2mix, tmp_path):
    out = tmp_path / "broken"
    args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(out),
            *ON_CPU, *TINY_SEPFORMER, "--test_only", "True"]
    _, _, _, donor = parse_arguments(args)
    ckpt = write_release_checkpoint(out / "save", donor)
    (ckpt / "masknet.ckpt").write_bytes(b"truncated")
    with pytest.raises(NoCheckpointError, match="no loadable checkpoint .* masknet.ckpt unreadable"):
        run(args)
    assert not (out / "test_results.csv").exists()


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


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_two_process_ddp_with_pcl_stays_in_step_and_evaluates_once(libri2mix, tmp_path, one_thread):
    out, probe = tmp_path / "ddp", tmp_path / "probe"
    probe.mkdir()
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    tiny = TINY_SEPFORMER[: TINY_SEPFORMER.index("--N_epochs")]
    recipe_args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(out),
                   *ON_CPU, *tiny, "--N_epochs", "2", "--seed", "3", "--save_audio", "False"]
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(REPO / "tests" / "ddp_probe.py"),
           str(probe), *recipe_args, "--distributed_backend", "gloo"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train_log.txt").read_text()
    assert log.count("epoch: 2,") == 1 and float(log.split("train pcl_loss: ")[1].split(",")[0]) > 0

    # Every trained parameter, the patch sampler's included, is the same on both processes
    # (the seed is one where the sampler's first convolution does get gradients).
    ranks = [torch.load(probe / f"rank{r}.pt") for r in (0, 1)]
    assert set(ranks[0]["trained"]) == {"separator", "patchsamplenet"}
    sampler = [r["patchsamplenet"]["conv.0.weight"] for r in (ranks[0]["started"], ranks[0]["trained"])]
    assert not torch.equal(*sampler)
    for name, state in ranks[0]["trained"].items():
        for key, value in state.items():
            assert torch.equal(value, ranks[1]["trained"][name][key]), f"{name}.{key} differs"

    # Each test utterance is separated once, by one of the processes...
    tested = [ranks[0]["tested"], ranks[1]["tested"]]
    test_ids = sorted(p.stem for p in (libri2mix / "wav8k" / "min" / "test" / "mix_both").glob("*.wav"))
    assert all(tested) and not set(tested[0]) & set(tested[1])
    assert sorted(tested[0] + tested[1]) == test_ids
    # ...and the csv is the one a single process writes for the same checkpoint.
    ddp_rows = check_results(out, libri2mix)
    ddp_checkpoint = (out / "test_checkpoint.txt").read_text()
    run(recipe_args + ["--test_only", "True"])
    assert (out / "test_checkpoint.txt").read_text() == ddp_checkpoint
    for ddp_row, row in zip(ddp_rows, results(out)):
        assert ddp_row["snt_id"] == row["snt_id"]
        for key in ("sdr", "sdr_i", "si-snr", "si-snr_i"):
            assert float(ddp_row[key]) == pytest.approx(float(row[key]), abs=1e-6)


def test_an_option_given_twice_takes_the_last_as_argparse_does(libri2mix, tmp_path, caplog):
    # README's quick try with one more --N_epochs.
    small = ["--N_encoder_out", "64", "--out_channels", "64", "--num_dual_path_layers", "1",
             "--chunk_size", "50", "--pcl_proj_dim", "32", "--pcl_num_patches", "64",
             "--training_signal_len", "8000", "--N_epochs", "2"]
    args = [SEPFORMER, "--data_folder", str(libri2mix), "--output_folder", str(tmp_path / "run"),
            *small, "--intra_layers", "1", "--inter_layers", "1", "--d_ffn", "128",
            "--N_epochs", "3"]
    with caplog.at_level("WARNING", logger="nass.training.recipe"):
        _, _, overrides, hparams = parse_arguments(args)
    assert hparams["N_epochs"] == 3 and hparams["epoch_counter"].limit == 3
    assert overrides.count("N_epochs") == 1
    assert "--N_epochs is given more than once; the last, 3, is used" in caplog.text


def test_a_refused_run_lets_go_of_the_folders_lock_for_the_next_run_in_this_process(
        libri2mix, tmp_path):
    # The folder and its lock file are there from an earlier run, so the refused run keeps the
    # file; its lock must still be let go, or the second run reads "in use by another run".
    output = tmp_path / "earlier"
    output.mkdir()
    (output / RUN_LOCK).touch()
    argv = [str(LIBRIMIX_RECIPE / "hparams" / "sepformer-libri2mix.yaml"), "--data_folder",
            str(libri2mix), "--output_folder", str(output), *TINY_ARGS, *ON_CPU,
            "--test_only", "True"]
    refusals = []    # kept, as a notebook keeps its last traceback (and with it the run's frames)
    for _ in range(2):
        with pytest.raises(RecipeError, match="holds no CKPT") as refused:
            run(argv)
        refusals.append(refused)
    assert (output / RUN_LOCK).exists()
