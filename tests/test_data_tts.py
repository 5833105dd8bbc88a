"""The synthetic-speech corpus builder, with stand-ins for flite and espeak-ng (tests need neither)."""

import csv
import zlib

import numpy as np
import pytest
import soundfile as sf

from nass.data import mixing, tts
from nass.data.prepare import librimix_layout, prepare_layout


def fake_voice(voice, text, sample_rate):
    """A different 'utterance' per voice and text, 1-2 s long."""
    rng = np.random.default_rng(zlib.crc32(f"{voice}{text}".encode()))
    return rng.standard_normal(int(sample_rate * rng.uniform(1.0, 2.0)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    counts = {"train-100": 4, "dev": 2, "test": 2}
    return tts.build_tts_librimix(tmp_path_factory.mktemp("tts"), counts, synthesize=fake_voice)


def test_corpus_is_a_libri2mix_the_recipe_reads(corpus, tmp_path):
    base = corpus / "wav8k" / "min"
    for split, count in (("train-100", 4), ("dev", 2), ("test", 2)):
        names = sorted(p.name for p in (base / split / "mix_both").glob("*.wav"))
        assert len(names) == count
        for sub in ("mix_clean", "mix_single", "s1", "s2", "noise"):
            assert sorted(p.name for p in (base / split / sub).glob("*.wav")) == names
        with open(base / "metadata" / f"mixture_{split}_mix_both.csv") as fin:
            assert [r["mixture_ID"] + ".wav" for r in csv.DictReader(fin)] == names
    csvs = prepare_layout(librimix_layout(corpus), tmp_path, 8000)
    assert sorted(csvs) == ["test", "train", "valid"]


def test_mixtures_sum_exactly_at_librimix_levels(corpus):
    folder = corpus / "wav8k" / "min" / "dev"
    for path in (folder / "mix_both").glob("*.wav"):
        sig = {sub: sf.read(str(folder / sub / path.name))[0]
               for sub in ("mix_both", "mix_clean", "s1", "s2", "noise")}
        np.testing.assert_array_equal(sig["mix_both"], sig["s1"] + sig["s2"] + sig["noise"])
        np.testing.assert_array_equal(sig["mix_clean"], sig["s1"] + sig["s2"])
        assert np.abs(sig["mix_both"]).max() <= mixing.PEAK + 1e-4
        # Noise below speech: LibriMix draws speech in -33..-25 LUFS and noise in -38..-30.
        assert np.std(sig["noise"]) < max(np.std(sig["s1"]), np.std(sig["s2"]))


def test_splits_have_their_own_voices():
    voices = [set(v) for v in tts.VOICES.values()]
    assert all(len(v) >= 3 for v in voices)
    assert not (voices[0] & voices[1] or voices[0] & voices[2] or voices[1] & voices[2])
    assert {v[0] for v in tts.VOICES["train-100"]} == {"flite", "espeak-ng"}


def test_existing_corpus_is_kept_without_overwrite(corpus):
    with pytest.raises(FileExistsError, match="overwrite"):
        tts.build_tts_librimix(corpus.parent, {"dev": 1}, synthesize=fake_voice)


def test_missing_programs_are_named_with_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    assert tts.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "nass.data.tts: flite, espeak-ng not found; install with: apt-get install flite espeak-ng"
    assert not (tmp_path / "Libri2Mix").exists()


def test_speak_runs_the_engine_resamples_and_trims(monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        out = cmd[cmd.index("-o") + 1] if "-o" in cmd else cmd[cmd.index("-w") + 1]
        tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
        sf.write(out, np.concatenate([np.zeros(1600), tone, np.zeros(3200)]), 16000)

    monkeypatch.setattr(tts.subprocess, "run", fake_run)
    flite = tts.speak(("flite", "slt", None, None), "hello there")
    espeak = tts.speak(("espeak-ng", "en-us+f5", 68, 145), "hello there")
    assert calls[0][:3] == ["flite", "-voice", "slt"] and "hello there" in calls[0]
    assert calls[1][:7] == ["espeak-ng", "-v", "en-us+f5", "-p", "68", "-s", "145"]
    for signal in (flite, espeak):
        assert abs(len(signal) - 8000) < 40        # 1 s of tone at 8 kHz, silences trimmed
