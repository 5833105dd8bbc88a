"""Each mistake a person can make on the command line, run as they would run it.

Every case must exit non-zero with a message naming the thing that is wrong,
and without a traceback. The commands run concurrently (a few at a time):
each is a fresh Python process that imports torch and SpeechBrain.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.utils.checkpoints import Checkpointer

from conftest import LIBRIMIX_HPARAMS, LIBRIMIX_RECIPE, TINY, TINY_ARGS, TINY_SEPFORMER
from nass.data.prepare import librimix_layout, prepare_layout
from nass.model.loading import load_model

TRAIN = [sys.executable, str(LIBRIMIX_RECIPE / "train.py")]
NASS = [sys.executable, "-m", "nass.cli"]
HPARAMS = str(LIBRIMIX_HPARAMS)


def recipe_mistakes(tmp, libri2mix, libri3mix):
    """``{case: (argv, what the message must say)}`` for ``train.py``."""
    out = str(tmp / "run")
    data = ["--data_folder", str(libri2mix), "--output_folder", out]
    # A csv naming a wav that is gone, trusted with --skip_prep True.
    corpus = tmp / "Libri2Mix"
    shutil.copytree(libri2mix, corpus)
    prepare_layout(librimix_layout(corpus), tmp / "prepared" / "save", 8000)
    gone = sorted((corpus / "wav8k" / "min" / "train-100" / "noise").glob("*.wav"))[0]
    gone.unlink()
    return {
        "no data folder": ([HPARAMS], "--data_folder is required"),
        "data folder above the corpus": (
            [HPARAMS, "--data_folder", str(libri2mix.parent), "--output_folder", out, *TINY_ARGS],
            f"did you mean --data_folder {libri2mix}"),
        "misspelt option": ([HPARAMS, *data, "--N_epoch", "3"], "did you mean --N_epochs?"),
        "value of the wrong kind": ([HPARAMS, *data, "--batch_size", "abc"],
                                    "--batch_size expects a number"),
        "test_only without a checkpoint": ([HPARAMS, *data, *TINY_ARGS, "--test_only", "True"],
                                           f"{out}/save holds no CKPT"),
        "skip_prep csv naming a missing wav": (
            [HPARAMS, "--data_folder", str(corpus), "--output_folder", str(tmp / "prepared"),
             *TINY_SEPFORMER, "--skip_prep", "True"],
            f"{gone.resolve()}: missing (named in train.csv"),
        "Libri3Mix with 2-speaker hparams": (
            [HPARAMS, "--data_folder", str(libri3mix), "--output_folder", out, *TINY_ARGS],
            "s3: this corpus has more speakers than the 2"),
        "fp16 on a CPU": ([HPARAMS, *data, *TINY_ARGS, "--precision", "fp16", "--device", "cpu"],
                          "precision fp16 needs a CUDA device"),
        "tf32 on a CPU": ([HPARAMS, *data, *TINY_ARGS, "--precision", "tf32", "--device", "cpu"],
                          "--precision tf32: precision tf32 needs a CUDA device (device is cpu)"),
    }


def separate_mistakes(tmp):
    """``{case: (argv, what the message must say)}`` for ``nass separate`` and ``nass plot``."""
    save = tmp / "save"
    torch.manual_seed(0)
    model = load_model(LIBRIMIX_HPARAMS, TINY)
    Checkpointer(save, {"encoder": model.encoder, "masknet": model.masknet,
                        "decoder": model.decoder}).save_checkpoint(meta={"si-snr": -1.0})
    corrupt = tmp / "corrupt"
    shutil.copytree(save, corrupt)
    (next(corrupt.glob("CKPT+*")) / "encoder.ckpt").write_bytes(b"\x80\x02" + b"x" * 50)
    talk = tmp / "talk.wav"
    sf.write(talk, 0.1 * np.sin(np.arange(4000) * 0.05), 8000)
    (tmp / "d2").mkdir()
    shutil.copy(talk, tmp / "d2" / "talk.wav")
    (tmp / "a_file").write_text("x")
    (tmp / "notes.yaml").write_text("key: [unclosed\n")
    base = ["separate", "--hparams", HPARAMS, "--checkpoint", str(save), *TINY_ARGS]
    return {
        "out-dir is a file": ([*base, str(talk), "--out-dir", str(tmp / "a_file")],
                              f"--out-dir {tmp / 'a_file'} is a file"),
        "corrupt checkpoint": ([*base[:4], str(corrupt), *TINY_ARGS, str(talk)],
                               "encoder.ckpt unreadable: corrupt or cut short"),
        "hparams not YAML": (["separate", "--hparams", str(tmp / "notes.yaml"), "--checkpoint",
                              str(save), str(talk)], f"{tmp / 'notes.yaml'} is not a YAML"),
        "training option when separating": ([*base, "--lr", "0.1", str(talk)],
                                            "--lr changes nothing when separating"),
        "two inputs, one output name": ([*base, str(talk), str(tmp / "d2" / "talk.wav"),
                                         "--out-dir", str(tmp / "out")], "would both be written"),
        "too little memory for a window": ([*base, "--max-memory", "0.0001", str(talk)],
                                           "--max-memory) of 0.0001 GiB is too little for this "
                                           "model: its weights and the shortest window"),
        "plot without its mixture": (["plot", str(tmp / "gone.wav")],
                                     f"no such mixture file: {tmp / 'gone.wav'}"),
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, libri2mix, libri3mix):
    """``{case: (expected, completed process)}``, the commands run four at a time."""
    tmp = tmp_path_factory.mktemp("mistakes")
    cases = {name: (TRAIN + argv, expected)
             for name, (argv, expected) in recipe_mistakes(tmp, libri2mix, libri3mix).items()}
    cases.update({name: (NASS + argv, expected)
                  for name, (argv, expected) in separate_mistakes(tmp).items()})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("NASS_DEBUG", None)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(subprocess.run, argv, capture_output=True, text=True,
                                     timeout=300, env=env)
                   for name, (argv, _) in cases.items()}
        return {name: (cases[name][1], future.result()) for name, future in futures.items()}


CASES = ["no data folder", "data folder above the corpus", "misspelt option",
         "value of the wrong kind", "test_only without a checkpoint",
         "skip_prep csv naming a missing wav", "Libri3Mix with 2-speaker hparams", "fp16 on a CPU",
         "tf32 on a CPU",
         "out-dir is a file", "corrupt checkpoint", "hparams not YAML",
         "training option when separating", "two inputs, one output name",
         "too little memory for a window", "plot without its mixture"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.slow
def test_a_mistake_is_one_message_without_a_traceback(outcomes, case):
    expected, proc = outcomes[case]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-2000:]
    assert expected in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, proc.stderr[-2000:]


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
