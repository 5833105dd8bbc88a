"""Which output is which: the report of the API, ``<stem>_sources.json``, the close-call line
on stderr and ``--noise-output``."""

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY, separate
from nass.inference import Separator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def api(checkpoint):
    return Separator.from_hparams(HPARAMS, checkpoint, overrides=TINY)


@pytest.fixture
def talk(tmp_path):
    t = np.arange(8000) / 8000
    voice = np.sin(2 * np.pi * np.cumsum(150 * (1 + 0.2 * np.sin(5 * t))) / 8000)
    noise = 0.05 * np.random.default_rng(0).standard_normal(8000)
    sf.write(tmp_path / "talk.wav", 0.3 * voice + noise, 8000)
    return tmp_path / "talk.wav"


@pytest.mark.slow
def test_sidecar_says_which_output_is_which_as_the_api_does(checkpoint, api, talk, capsys):
    assert separate(checkpoint, talk, "--out-dir", talk.parent / "out") == 0
    report = json.loads((talk.parent / "out" / "talk_sources.json").read_text())
    expected = api.separate_file(talk).report
    assert report["input"] == str(talk)
    assert report["checkpoint"] == str(api.checkpoint) == expected["checkpoint"]
    assert report["noise"] == expected["noise"] == "identified"
    assert report["outputs"] == {name: {"file": f"talk_{name}.wav", "model_output": index}
                                 for name, index in expected["outputs"].items()}
    assert sorted(expected["outputs"].values()) == [0, 1, 2]
    assert report["noise_scores"] == expected["noise_scores"] and len(report["noise_scores"]) == 3
    assert math.isclose(sum(report["noise_probabilities"]), 1.0, abs_tol=1e-3)
    noise = expected["outputs"]["noise"]
    assert report["noise_scores"][noise] == min(report["noise_scores"])


@pytest.mark.parametrize("close", [True, False])
@pytest.mark.slow
def test_a_close_call_is_one_line_on_stderr_naming_the_file(checkpoint, talk, capsys, monkeypatch,
                                                           close):
    monkeypatch.setattr("nass.inference.noise_id.CLOSE_MARGIN", math.inf if close else -math.inf)
    assert separate(checkpoint, talk) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "close call" in line]
    assert len(lines) == (1 if close else 0)
    if close:
        assert lines[0].startswith(f"nass separate: warning: {talk}: close call")
        assert "--noise-output" in lines[0] and "talk_sources.json" in lines[0]
    assert json.loads((talk.parent / "talk_sources.json").read_text())["close"] is close


@pytest.mark.slow
def test_noise_output_chooses_the_noise(checkpoint, api, talk):
    noises = []
    for k in range(3):
        assert separate(checkpoint, talk, "--noise-output", k, "--overwrite") == 0
        report = json.loads((talk.parent / "talk_sources.json").read_text())
        assert report["noise"] == "given" and report["outputs"]["noise"]["model_output"] == k
        assert report["noise_scores"] is None
        written = sf.read(talk.parent / "talk_noise.wav", dtype="float32")[0]
        by_api = api.separate_file(talk, noise_output=k)
        assert by_api.report["outputs"]["noise"] == k
        assert np.array_equal(written, by_api["noise"].numpy())
        noises.append(written)
    # Each K names another model output the noise; the three are the model's three outputs.
    assert not np.array_equal(noises[0], noises[1]) and not np.array_equal(noises[1], noises[2])
    identified = api.separate_file(talk)
    assert {tuple(np.round(n, 6)) for n in noises} == {
        tuple(np.round(s.numpy(), 6)) for s in identified.values()}


def test_sidecar_is_not_overwritten_without_overwrite(checkpoint, talk, capsys):
    (talk.parent / "talk_sources.json").write_text("mine")
    assert separate(checkpoint, talk) == 1
    assert "talk_sources.json already exists from before this run (use --overwrite" in capsys.readouterr().err
    assert (talk.parent / "talk_sources.json").read_text() == "mine"


@pytest.mark.parametrize("value,message", [
    ("3", "--noise-output: must be a model output from 0 to 2, got 3"),
    ("-1", "--noise-output: must be a model output from 0 to 2, got -1"),
])
@pytest.mark.slow
def test_a_bad_noise_output_is_one_line(checkpoint, talk, capsys, value, message):
    assert separate(checkpoint, talk, "--noise-output", value) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"nass separate: error: {message}"
    assert not (talk.parent / "talk_noise.wav").exists()


def test_the_api_refuses_a_bad_noise_output(api):
    for bad in (3, -1, 1.0):
        with pytest.raises(ValueError, match="noise_output: must be a model output from 0 to 2"):
            api.separate_tensor(torch.randn(4000), 8000, noise_output=bad)
