"""Each mistake a person can make on the command line, run as they would run it.

One table row per mistake: the command, what its one-line message must say
(and must not), and the files it must leave as they were (a marker file that
a model file's code would have made must not appear). Every case must exit
with status 1 and one ``error:`` line, without a traceback. The commands run
concurrently (a few at a time): each is a fresh Python process that imports
torch and SpeechBrain.
"""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer

from conftest import LIBRIMIX_HPARAMS, LIBRIMIX_RECIPE, TINY, TINY_ARGS, TINY_SEPFORMER
from nass.data.prepare import librimix_layout, prepare_layout
from nass.files import hold_lock
from nass.model.loading import load_model
from nass.training.recipe import RUN_LOCK

TRAIN = [sys.executable, str(LIBRIMIX_RECIPE / "train.py")]
NASS = [sys.executable, "-m", "nass.cli"]
HPARAMS = str(LIBRIMIX_HPARAMS)

Mistake = namedtuple("Mistake", "argv says not_said untouched", defaults=((), ()))
Mistake.__doc__ = """A command, what its message says (and must not say), and paths it must leave as they were."""


class RunsCode:
    """Pickles as a call of ``os.system``: what a malicious checkpoint holds."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def recipe_mistakes(tmp, libri2mix, libri3mix):
    """``{case: Mistake}`` for ``train.py``."""
    # Each case its own output folder: a run locks its folder, and the cases run at once.
    folders = iter(tmp / f"run{k}" for k in range(100))

    def data():
        return ["--data_folder", str(libri2mix), "--output_folder", str(next(folders))]

    # A csv naming a wav that is gone, trusted with --skip_prep True.
    corpus = tmp / "Libri2Mix"
    shutil.copytree(libri2mix, corpus)
    prepare_layout(librimix_layout(corpus), tmp / "prepared" / "save", 8000)
    gone = sorted((corpus / "wav8k" / "min" / "train-100" / "noise").glob("*.wav"))[0]
    gone.unlink()
    # A csv of the right files without the column of the second speaker.
    shutil.copytree(tmp / "prepared", tmp / "columns")
    prepare_layout(librimix_layout(libri2mix), tmp / "columns" / "save", 8000)
    train_csv = tmp / "columns" / "save" / "train.csv"
    with open(train_csv, newline="") as fin:
        rows = list(csv.DictReader(fin))
    with open(train_csv, "w", newline="") as fout:
        writer = csv.DictWriter(fout, [c for c in rows[0] if c != "s2_wav"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    # An output folder another run holds (the lock is taken by this test process).
    busy = tmp / "busy"
    busy.mkdir()

    def out_of_range(option, value, says):
        folder = tmp / f"run{option}{value}"
        return Mistake([HPARAMS, "--data_folder", str(libri2mix), "--output_folder", str(folder),
                        *TINY_SEPFORMER, option, value], f"{option} {says}, got {value}",
                       untouched=(folder,))

    return {
        "no data folder": Mistake([HPARAMS], "--data_folder is required"),
        "data folder above the corpus": Mistake(
            [HPARAMS, "--data_folder", str(libri2mix.parent), "--output_folder", str(next(folders)),
             *TINY_ARGS],
            f"did you mean --data_folder {libri2mix}"),
        "misspelt option": Mistake([HPARAMS, *data(), "--N_epoch", "3"], "did you mean --N_epochs?"),
        "value of the wrong kind": Mistake([HPARAMS, *data(), "--batch_size", "abc"],
                                           "--batch_size expects a number"),
        "test_only without a checkpoint": Mistake(
            [HPARAMS, "--data_folder", str(libri2mix), "--output_folder", str(tmp / "untrained"),
             *TINY_ARGS, "--test_only", "True"], f"{tmp / 'untrained'}/save holds no CKPT",
            untouched=(tmp / "untrained" / RUN_LOCK,)),
        "skip_prep csv naming a missing wav": Mistake(
            [HPARAMS, "--data_folder", str(corpus), "--output_folder", str(tmp / "prepared"),
             *TINY_SEPFORMER, "--skip_prep", "True"],
            f"{gone.resolve()}: missing (named in train.csv"),
        "skip_prep csv lacking a column": Mistake(
            [HPARAMS, "--data_folder", str(libri2mix), "--output_folder", str(tmp / "columns"),
             *TINY_SEPFORMER, "--skip_prep", "True"],
            "train.csv: no s2_wav column(s)", untouched=(tmp / "columns" / "train_log.txt",)),
        "Libri3Mix with 2-speaker hparams": Mistake(
            [HPARAMS, "--data_folder", str(libri3mix), "--output_folder", str(next(folders)),
             *TINY_ARGS],
            "s3: this corpus has more speakers than the 2"),
        "fp16 on a CPU": Mistake([HPARAMS, *data(), *TINY_ARGS, "--precision", "fp16", "--device", "cpu"],
                                 "precision fp16 needs a CUDA device"),
        "tf32 on a CPU": Mistake([HPARAMS, *data(), *TINY_ARGS, "--precision", "tf32", "--device", "cpu"],
                                 "--precision tf32: precision tf32 needs a CUDA device (device is cpu)"),
        "batch size 0": out_of_range("--batch_size", "0", "must be a whole number >= 1"),
        "negative learning rate": out_of_range("--lr", "-1", "must be a number >= 0"),
        "negative PCL weight": out_of_range("--pcl_weight", "-5", "must be a number >= 0"),
        "training crops of 0 samples": out_of_range("--training_signal_len", "0",
                                                    "must be a whole number >= 1"),
        "a fraction of an epoch": out_of_range("--N_epochs", "1.5", "must be a whole number >= 1"),
        "baseline switch half given": Mistake([HPARAMS, *data(), *TINY_ARGS, "--noise_output", "False"],
                                              "pcl_weight > 0 needs noise_output: True"),
        "noise assignment of another name": Mistake(
            [HPARAMS, *data(), *TINY_ARGS, "--noise_assignment", "last"],
            "noise_assignment must be one of ('pit', 'fixed'), got 'last'"),
        "device that does not exist": Mistake(
            [HPARAMS, *data(), *TINY_ARGS, "--device", "foo"], "--device foo is not a device"),
        "output folder that is a file": Mistake(
            [HPARAMS, "--data_folder", str(libri2mix), "--output_folder", str(tmp / "a_file"),
             *TINY_ARGS], f"cannot create {tmp / 'a_file' / 'save'} (Not a directory); check "
                          f"--output_folder"),
        "output folder in use by another run": Mistake(
            [HPARAMS, "--data_folder", str(libri2mix), "--output_folder", str(busy),
             *TINY_SEPFORMER],
            f"--output_folder {busy} is in use by another run ({busy / RUN_LOCK} is held by "
            f"process {os.getpid()})", untouched=(busy / "train_log.txt", busy / RUN_LOCK)),
    }


def model_folder_mistakes(tmp):
    """``{case: Mistake}`` for model files that would run code when loaded: the marker each
    names must not appear."""
    save = tmp / "save"
    torch.manual_seed(0)
    model = load_model(LIBRIMIX_HPARAMS, TINY)
    parts = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
    Checkpointer(save, parts).save_checkpoint(meta={"si-snr": -1.0})
    talk = tmp / "talk.wav"
    # A recipe checkpoint whose masknet.ckpt runs a command when unpickled as torch allows.
    pickled = tmp / "pickled"
    shutil.copytree(save, pickled)
    marker = tmp / "pickle-ran"
    torch.save({"weight": RunsCode(f"touch {marker}")}, next(pickled.glob("CKPT+*")) / "masknet.ckpt")
    # The same file with another marker, loaded as torch would without weights_only: armed.
    armed = tmp / "armed.ckpt"
    torch.save({"weight": RunsCode(f"touch {tmp / 'armed-pickle'}")}, armed)
    torch.load(armed, weights_only=False)
    assert (tmp / "armed-pickle").exists()
    # Exported folders whose hyperparams.yaml gains a line that runs a command.
    cases = {"recipe checkpoint that runs code": Mistake(
        ["separate", "--hparams", HPARAMS, "--checkpoint", str(pickled), *TINY_ARGS, str(talk)],
        "masknet.ckpt unreadable: corrupt, cut short or not plain weights (UnpicklingError)",
        untouched=(marker,))}
    for name, line in (("apply", "x: !apply:os.system [touch {}]"),
                       ("python tag", "x: !!python/object/apply:os.system [touch {}]")):
        folder = tmp / f"exported-{name.replace(' ', '-')}"
        folder.mkdir()
        for part, module in parts.items():
            torch.save(module.state_dict(), folder / f"{part}.ckpt")
        marker = tmp / f"yaml-{name.replace(' ', '-')}-ran"
        (folder / "hyperparams.yaml").write_text(
            f"sample_rate: 8000\nnum_spks: 3\n{line.format(marker)}\n")
        load_hyperpyyaml(line.format(tmp / "armed-yaml") + "\n")
        assert (tmp / "armed-yaml").exists()
        (tmp / "armed-yaml").unlink()
        cases[f"exported hyperparams.yaml that runs code ({name})"] = Mistake(
            ["separate", "--checkpoint", str(folder), str(talk)],
            f"{folder / 'hyperparams.yaml'}, line 3: {line.split()[1]} would run code that is "
            f"not a constructor of torch, speechbrain or nass", untouched=(marker,))
    return cases


def separate_mistakes(tmp):
    """``{case: Mistake}`` for ``nass separate``, ``plot``, ``export`` and ``demo``."""
    save = tmp / "save"
    corrupt = tmp / "corrupt"
    shutil.copytree(save, corrupt)
    broken = next(corrupt.glob("CKPT+*"))
    (broken / "masknet.ckpt").write_bytes(b"\x80\x02garbage" * 10)
    talk = tmp / "talk.wav"
    sf.write(talk, 0.1 * np.sin(np.arange(4000) * 0.05), 8000)
    (tmp / "d2").mkdir()
    shutil.copy(talk, tmp / "d2" / "talk.wav")
    (tmp / "a_file").write_text("x")
    (tmp / "notes.yaml").write_text("key: [unclosed\n")
    for name in ("talk_spk1.wav", "talk_noise.wav"):
        shutil.copy(talk, tmp / name)
    (tmp / "mine.png").write_bytes(b"mine")
    (tmp / "model.onnx").write_bytes(b"\x08\x07")
    (tmp / "finished").mkdir()     # a run's output folder
    shutil.copytree(save, tmp / "finished" / "save")
    base = ["separate", "--hparams", HPARAMS, "--checkpoint", str(save), *TINY_ARGS]
    plot = ["plot", str(talk)]
    return {
        "out-dir is a file": Mistake([*base, str(talk), "--out-dir", str(tmp / "a_file")],
                                     f"--out-dir {tmp / 'a_file'} is a file"),
        "corrupt checkpoint": Mistake(
            [*base[:4], str(corrupt), *TINY_ARGS, str(talk)],
            f"{broken}: masknet.ckpt unreadable: corrupt, cut short or not plain weights "
            f"(UnpicklingError)", not_said=("weights_only", "does not fit")),
        "hparams not YAML": Mistake(["separate", "--hparams", str(tmp / "notes.yaml"),
                                     "--checkpoint", str(save), str(talk)],
                                    f"{tmp / 'notes.yaml'} is not a YAML"),
        "training option when separating": Mistake([*base, "--lr", "0.1", str(talk)],
                                                   "--lr changes nothing when separating"),
        "two inputs, one output name": Mistake([*base, str(talk), str(tmp / "d2" / "talk.wav"),
                                                "--out-dir", str(tmp / "out")],
                                               "would both be written"),
        "too little memory for a window": Mistake(
            [*base, "--max-memory", "0.0001", str(talk)],
            "--max-memory) of 0.0001 GiB is too little for this model: its weights and the "
            "shortest window"),
        "windows of 0 seconds": Mistake([*base, "--chunk-seconds", "0", str(talk)],
                                        "--chunk-seconds must be a number > 0, got 0"),
        "batches of 0 windows": Mistake([*base, "--batch-size", "0", str(talk)],
                                        "--batch-size must be a whole number >= 1, got 0"),
        "checkpoint is an ONNX file": Mistake(
            ["separate", "--checkpoint", str(tmp / "model.onnx"), str(talk)],
            f"is given as --onnx {tmp / 'model.onnx'}"),
        "checkpoint is the run folder": Mistake(
            [*base[:4], str(tmp / "finished"), *TINY_ARGS, str(talk)],
            f"its checkpoints are in {tmp / 'finished' / 'save'}"),
        "plot without its mixture": Mistake(["plot", str(tmp / "gone.wav")],
                                            f"no such mixture file: {tmp / 'gone.wav'}"),
        "plot onto its mixture": Mistake([*plot, "-o", str(talk)],
                                         f"-o {talk} is one of the files to plot",
                                         untouched=(talk,)),
        "plot onto a separated output": Mistake(
            [*plot, "-o", str(tmp / "talk_spk1.wav")],
            f"-o {tmp / 'talk_spk1.wav'} is one of the files to plot",
            untouched=(tmp / "talk_spk1.wav",)),
        "plot over an existing file": Mistake([*plot, "-o", str(tmp / "mine.png")],
                                              "already exists; use --overwrite",
                                              untouched=(tmp / "mine.png",)),
        "demo of 0 epochs": Mistake(["demo", "--epochs", "0", "--out-dir", str(tmp / "demo0")],
                                    "--epochs must be a whole number >= 1, got 0",
                                    untouched=(tmp / "demo0",)),
        "demo of negative minutes": Mistake(
            ["demo", "--minutes", "-1", "--out-dir", str(tmp / "demo1")],
            "--minutes must be a number of minutes > 0, got -1", untouched=(tmp / "demo1",)),
        "demo of a negative seed": Mistake(["demo", "--seed", "-1", "--out-dir", str(tmp / "demo2")],
                                           "--seed must be a whole number >= 0, got -1",
                                           untouched=(tmp / "demo2",)),
        "plot of a file that is not audio": Mistake(
            [*plot, str(tmp / "model.onnx"), "-o", str(tmp / "x.png")],
            f"{tmp / 'model.onnx'}: cannot be read as audio", untouched=(tmp / "x.png",)),
        "separating on a device that does not exist": Mistake([*base, "--device", "foo", str(talk)],
                                              "device 'foo' is not a device: give cpu, cuda"),
        "export with test results that are not there": Mistake(
            ["export", "--hparams", HPARAMS, "--checkpoint", str(save), *TINY_ARGS,
             "--test-results", str(tmp / "gone.csv"), "--out-dir", str(tmp / "exported")],
            f"--test-results {tmp / 'gone.csv'} cannot be read as a test_results.csv",
            untouched=(tmp / "exported",)),
        "ONNX export of a 0 s window": Mistake(
            ["export", "--format", "onnx", "--hparams", HPARAMS, "--checkpoint", str(save),
             *TINY_ARGS, "--window-seconds", "0", "--out-dir", str(tmp / "onnx")],
            "--window-seconds must be a number of seconds > 0, got 0",
            untouched=(tmp / "onnx",)),
    }


def snapshot(paths):
    """``{path: its bytes, "folder" or None}``: what a mistake must leave as it was."""
    return {path: (path.read_bytes() if path.is_file() else "folder" if path.is_dir() else None)
            for path in paths}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, libri2mix, libri3mix):
    """``{case: (Mistake, completed process, untouched paths before, after)}``, four at a time."""
    tmp = tmp_path_factory.mktemp("mistakes")
    cases = {name: mistake._replace(argv=TRAIN + mistake.argv)
             for name, mistake in recipe_mistakes(tmp, libri2mix, libri3mix).items()}
    for name, mistake in {**model_folder_mistakes(tmp), **separate_mistakes(tmp)}.items():
        cases[name] = mistake._replace(argv=NASS + mistake.argv)
    lock = hold_lock(tmp / "busy" / RUN_LOCK)    # as a run in progress holds it
    before = {name: snapshot(mistake.untouched) for name, mistake in cases.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("NASS_DEBUG", None)
    with lock, ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(subprocess.run, mistake.argv, capture_output=True,
                                     text=True, timeout=300, env=env)
                   for name, mistake in cases.items()}
        done = {name: future.result() for name, future in futures.items()}
    return {name: (mistake, done[name], before[name], snapshot(mistake.untouched))
            for name, mistake in cases.items()}


CASES = ["no data folder", "data folder above the corpus", "misspelt option",
         "value of the wrong kind", "test_only without a checkpoint",
         "skip_prep csv naming a missing wav", "skip_prep csv lacking a column",
         "Libri3Mix with 2-speaker hparams", "fp16 on a CPU", "tf32 on a CPU", "batch size 0",
         "negative learning rate", "negative PCL weight", "training crops of 0 samples",
         "a fraction of an epoch", "baseline switch half given",
         "noise assignment of another name", "device that does not exist",
         "output folder that is a file", "output folder in use by another run",
         "recipe checkpoint that runs code", "exported hyperparams.yaml that runs code (apply)",
         "exported hyperparams.yaml that runs code (python tag)",
         "out-dir is a file", "corrupt checkpoint", "hparams not YAML",
         "training option when separating", "two inputs, one output name",
         "too little memory for a window", "windows of 0 seconds", "batches of 0 windows",
         "checkpoint is an ONNX file",
         "checkpoint is the run folder", "plot without its mixture", "plot onto its mixture",
         "plot onto a separated output", "plot over an existing file", "demo of 0 epochs",
         "demo of negative minutes", "demo of a negative seed", "plot of a file that is not audio",
         "separating on a device that does not exist",
         "export with test results that are not there",
         "ONNX export of a 0 s window"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.slow
def test_a_mistake_is_one_message_without_a_traceback(outcomes, case):
    mistake, proc, before, after = outcomes[case]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-2000:]
    assert mistake.says in proc.stderr, proc.stderr[-2000:]
    assert not [words for words in mistake.not_said if words in proc.stderr], proc.stderr[-2000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert after == before, [str(path) for path in after if after[path] != before[path]]


@pytest.mark.slow
def test_every_case_is_tested(outcomes):
    assert sorted(outcomes) == sorted(CASES)


@pytest.mark.slow
def test_nass_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "NASS_DEBUG": "1"}
    proc = subprocess.run(TRAIN + [HPARAMS, "--data_folder", str(tmp_path), "--N_epoch", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "OverrideError" in proc.stderr


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_what_was_kept(libri2mix, tmp_path):
    out = tmp_path / "run"
    tiny = TINY_SEPFORMER[: TINY_SEPFORMER.index("--N_epochs")]
    argv = TRAIN + [HPARAMS, "--data_folder", str(libri2mix), "--output_folder", str(out), *tiny,
                    "--save_audio", "False", "--N_epochs", "100"]
    # A shell may start commands with SIGINT ignored; a terminal's Ctrl-C reaches Python's handler.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = out / "train_log.txt"
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if log.exists() and "epoch: 1," in log.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    newest = sorted((out / "save").glob("CKPT+*"))[-1]
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.splitlines()[-1] == (
        f"train.py: interrupted; the newest checkpoint is {newest}; rerun the same command to "
        f"resume from it (the epoch in progress restarts)")
    assert "Traceback" not in stdout + stderr
    assert "torchvision" not in stdout + stderr


@pytest.mark.slow
def test_ctrl_c_during_separate_is_one_line_and_leaves_no_output(checkpoint, tmp_path):
    long = tmp_path / "long.wav"   # minutes of windows: still separating when Ctrl-C comes
    sf.write(long, 0.1 * np.sin(np.arange(8000 * 600) * 0.05), 8000)
    argv = NASS + ["separate", "--hparams", HPARAMS, "--checkpoint", str(checkpoint), *TINY_ARGS,
                   "--chunk-seconds", "1", str(long)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().startswith("nass separate: using checkpoint")
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.splitlines()[-1] == ("nass separate: error: interrupted; 0 of 1 input(s) "
                                       "separated; the outputs of the input in progress were "
                                       "removed")
    assert "Traceback" not in stdout + stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]
