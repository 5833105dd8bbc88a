"""Synthetic corpora: layouts, file formats, mixture sums, metadata, levels, speakers, seeds."""

import csv
import doctest
import re

import numpy as np
import pytest
import soundfile as sf

from nass.data import synthetic
from nass.data.synthetic import (
    make_custom,
    make_librimix,
    make_librispeech_like,
    make_noise_folder,
    make_wham,
)

N_MIX = 2
DURATION = 0.4
# Each file is rounded to 16 bits on its own, at most half an LSB off; a
# mixture of up to three sources and noise is then off by at most
# (3 + 1 + 1) / 2 LSB against the sum of the files. Allow 3 LSB.
SUM_TOL = 3 / 32768
LIBRI_FOLDERS = {2: {"mix_both", "mix_clean", "mix_single", "s1", "s2", "noise"}}
LIBRI_FOLDERS[3] = LIBRI_FOLDERS[2] | {"s3"}
WHAMR_FOLDERS = {
    f"{kind}_{variant}"
    for kind in ("mix_both", "mix_clean", "mix_single", "s1", "s2")
    for variant in ("anechoic", "reverb")
} | {"noise"}


@pytest.fixture(scope="module")
def libri2(tmp_path_factory):
    return make_librimix(tmp_path_factory.mktemp("l2"), num_spks=2, sample_rates=(8000, 16000),
                         modes=("min", "max"), n_mixtures=N_MIX, duration=DURATION)


@pytest.fixture(scope="module")
def libri3(tmp_path_factory):
    return make_librimix(tmp_path_factory.mktemp("l3"), num_spks=3, modes=("min", "max"),
                         splits=("dev",), n_mixtures=N_MIX, duration=DURATION)


@pytest.fixture(scope="module")
def wham(tmp_path_factory):
    return make_wham(tmp_path_factory.mktemp("wham"), n_mixtures=N_MIX, duration=DURATION)


@pytest.fixture(scope="module")
def whamr(tmp_path_factory):
    return make_wham(tmp_path_factory.mktemp("whamr"), splits=("tt",), n_mixtures=N_MIX,
                     duration=DURATION, reverb=True)


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    return make_custom(tmp_path_factory.mktemp("custom"), num_spks=3, n_mixtures=N_MIX,
                       duration=DURATION)


def read(path):
    return sf.read(str(path), dtype="float64")[0]


def stems(folder):
    return sorted(p.stem for p in folder.glob("*.wav"))


def split_dirs(corpus, num_spks):
    """``(split dir, sample rate, speaker folders)`` of every split a fixture wrote."""
    return [
        (d, int(d.parent.parent.name[3:-1]) * 1000, [f"s{k}" for k in range(1, num_spks + 1)])
        for d in corpus.glob("wav*k/*/*") if d.name != "metadata"
    ]


def dominant_f0(x, sr):
    """The pitch (80-300 Hz) whose period maximises the autocorrelation."""
    r = np.fft.irfft(np.abs(np.fft.rfft(x - x.mean(), 2 * x.size)) ** 2)[: x.size]
    lo, hi = int(sr / 300), int(sr / 80)
    return sr / (lo + np.argmax(r[lo:hi]))


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("num_spks", [2, 3])
@pytest.mark.slow
def test_librimix_layout(libri2, libri3, num_spks):
    corpus = {2: libri2, 3: libri3}[num_spks]
    splits = {2: {"train-100", "dev", "test"}, 3: {"dev"}}[num_spks]
    rates = {2: {"wav8k", "wav16k"}, 3: {"wav8k"}}[num_spks]
    assert corpus.name == f"Libri{num_spks}Mix"
    assert {p.name for p in corpus.iterdir()} == rates
    for rate in rates:
        assert {p.name for p in (corpus / rate).iterdir()} == {"min", "max"}
        for mode in ("min", "max"):
            base = corpus / rate / mode
            assert {p.name for p in base.iterdir()} == splits | {"metadata"}
            for split in splits:
                assert {p.name for p in (base / split).iterdir()} == LIBRI_FOLDERS[num_spks]
            assert {p.name for p in (base / "metadata").iterdir()} == {
                f"mixture_{split}_{subset}.csv"
                for split in splits for subset in ("mix_both", "mix_clean", "mix_single")
            }


def test_wham_and_whamr_layouts(wham, whamr):
    assert {p.name for p in wham.iterdir()} == {"wav8k"}
    assert {p.name for p in (wham / "wav8k" / "min").iterdir()} == {"tr", "cv", "tt"}
    for split in ("tr", "cv", "tt"):
        assert {p.name for p in (wham / "wav8k" / "min" / split).iterdir()} == LIBRI_FOLDERS[2]
    assert {p.name for p in (whamr / "wav8k" / "min" / "tt").iterdir()} == WHAMR_FOLDERS
    # wsj0-2mix ids: utterance, level, utterance, minus the level.
    pattern = re.compile(r"^([0-9a-z]{8})_(-?\d+\.\d{4})_([0-9a-z]{8})_(-?\d+\.\d{4})$")
    for stem in stems(wham / "wav8k" / "min" / "tt" / "mix_both"):
        match = pattern.match(stem)
        assert match, stem
        assert float(match[2]) == pytest.approx(-float(match[4]), abs=2e-4)


def test_custom_layout(custom):
    assert {p.name for p in custom.iterdir()} == {"train", "valid", "test"}
    for split in ("train", "valid", "test"):
        assert {p.name for p in (custom / split).iterdir()} == {
            "mixture", "source1", "source2", "source3", "noise",
        }


def test_librimix_ids_look_like_librimix(libri2, libri3):
    pattern = re.compile(r"^\d+-\d+-\d{4}(_\d+-\d+-\d{4})+$")
    for corpus, num_spks in ((libri2, 2), (libri3, 3)):
        for stem in stems(corpus / "wav8k" / "min" / "dev" / "mix_both"):
            assert pattern.match(stem) and stem.count("_") == num_spks - 1, stem


def test_every_mixture_has_all_its_files(libri2, libri3, wham, whamr, custom):
    for split_dir in [d for c in (libri2, libri3, wham, whamr) for d, _, _ in split_dirs(c, 2)] + [
        custom / s for s in ("train", "valid", "test")
    ]:
        names = [stems(folder) for folder in split_dir.iterdir()]
        assert len(names[0]) == N_MIX, split_dir
        assert all(n == names[0] for n in names), split_dir


def test_files_are_mono_16_bit_at_the_folder_rate(libri2, wham, custom):
    for corpus in (libri2, wham):
        for split_dir, sr, _ in split_dirs(corpus, 2):
            for path in split_dir.glob("*/*.wav"):
                info = sf.info(str(path))
                assert (info.channels, info.samplerate, info.format, info.subtype) == (
                    1, sr, "WAV", "PCM_16"), path
    for path in custom.glob("*/*/*.wav"):
        assert sf.info(str(path)).samplerate == 8000


def test_other_sample_rates_name_their_folders(tmp_path):
    corpus = make_librimix(tmp_path, sample_rates=(22050,), splits=("test",), n_mixtures=1,
                           duration=0.3)
    assert {p.name for p in corpus.iterdir()} == {"wav22k"}
    path = next((corpus / "wav22k" / "min" / "test" / "mix_both").glob("*.wav"))
    assert sf.info(str(path)).samplerate == 22050


# --------------------------------------------------------------------------- signals


def test_mixtures_are_sums_of_their_files(libri2, libri3, wham, whamr, custom):
    checked = 0
    for corpus, num_spks in ((libri2, 2), (libri3, 3), (wham, 2), (whamr, 2)):
        suffixes = ("_anechoic", "_reverb") if corpus == whamr else ("",)
        for split_dir, _, speakers in split_dirs(corpus, num_spks):
            for stem in stems(split_dir / "noise"):
                noise = read(split_dir / "noise" / f"{stem}.wav")
                for suffix in suffixes:
                    def get(kind):
                        return read(split_dir / f"{kind}{suffix}" / f"{stem}.wav")
                    sources = [get(s) for s in speakers]
                    np.testing.assert_allclose(get("mix_clean"), sum(sources), atol=SUM_TOL)
                    np.testing.assert_allclose(get("mix_both"), sum(sources) + noise, atol=SUM_TOL)
                    np.testing.assert_allclose(get("mix_single"), sources[0] + noise, atol=SUM_TOL)
                    checked += 1
    for stem in stems(custom / "test" / "mixture"):
        parts = [read(custom / "test" / d / f"{stem}.wav")
                 for d in ("source1", "source2", "source3", "noise")]
        np.testing.assert_allclose(read(custom / "test" / "mixture" / f"{stem}.wav"), sum(parts),
                                   atol=SUM_TOL)
        checked += 1
    assert checked > 0


def test_min_and_max_lengths(libri2, libri3):
    for corpus, num_spks in ((libri2, 2), (libri3, 3)):
        for split_dir, sr, speakers in split_dirs(corpus, num_spks):
            for stem in stems(split_dir / "noise"):
                lengths = {sf.info(str(f)).frames for f in split_dir.glob(f"*/{stem}.wav")}
                assert len(lengths) == 1, (split_dir, stem)
            if split_dir.parent.name != "max":
                continue
            min_dir = split_dir.parent.parent / "min" / split_dir.name
            assert stems(min_dir / "noise") == stems(split_dir / "noise")
            for stem in stems(split_dir / "noise"):
                n_min = sf.info(str(min_dir / "noise" / f"{stem}.wav")).frames
                sources = [read(split_dir / s / f"{stem}.wav") for s in speakers]
                assert sources[0].size >= n_min
                # The shortest source is the min-mode length, zero-padded to the longest.
                assert any(not np.any(s[n_min:]) for s in sources), stem


def test_sample_rates_hold_the_same_mixtures(libri2):
    for mode in ("min", "max"):
        d8, d16 = (libri2 / f"wav{k}k" / mode / "dev" / "mix_both" for k in (8, 16))
        assert stems(d8) == stems(d16)
        for stem in stems(d8):
            seconds = [sf.info(str(d / f"{stem}.wav")).duration for d in (d8, d16)]
            assert seconds[0] == pytest.approx(seconds[1], abs=1e-3)


def test_nothing_clips_and_levels_are_speech_like(libri2, wham, whamr):
    for corpus in (libri2, wham, whamr):
        for path in corpus.glob("wav*k/*/*/*/*.wav"):
            assert np.max(np.abs(read(path))) < 1.0, path
    base = libri2 / "wav8k" / "min" / "test"
    for stem in stems(base / "noise"):
        speech = [read(base / s / f"{stem}.wav") for s in ("s1", "s2")]
        speech_db = [10 * np.log10(np.mean(x**2)) for x in speech]
        noise_db = 10 * np.log10(np.mean(read(base / "noise" / f"{stem}.wav") ** 2))
        assert all(-32 < db < -18 for db in speech_db), speech_db
        assert noise_db < np.mean(speech_db) - 1


def test_speakers_of_a_mixture_differ(libri2, libri3):
    for base, speakers in ((libri2 / "wav16k" / "min" / "train-100", ("s1", "s2")),
                           (libri3 / "wav8k" / "min" / "dev", ("s1", "s2", "s3"))):
        sr = sf.info(str(next(base.glob("s1/*.wav")))).samplerate
        for stem in stems(base / "noise"):
            sources = [read(base / s / f"{stem}.wav") for s in speakers]
            corr = np.corrcoef(sources)
            # Independent utterances: only chance overlaps of harmonics correlate.
            assert np.max(np.abs(corr - np.eye(len(sources)))) < 0.3, (stem, corr)
            f0 = sorted(dominant_f0(x, sr) for x in sources)
            # Voices are >= 15 % apart; intonation and the lag grid blur that a little.
            assert all(hi / lo > 1.04 for lo, hi in zip(f0, f0[1:])), (stem, f0)


def test_whamr_reverb_is_a_reverberant_copy(wham, whamr):
    base, dry_base = whamr / "wav8k" / "min" / "tt", wham / "wav8k" / "min" / "tt"
    # WHAM! and WHAMR! from one seed hold the same mixtures.
    assert stems(base / "noise") == stems(dry_base / "noise")
    for stem in stems(base / "noise"):
        dry, wet = (read(base / f"s1_{v}" / f"{stem}.wav") for v in ("anechoic", "reverb"))
        wham_s1 = read(dry_base / "s1" / f"{stem}.wav")
        assert np.corrcoef(dry, wham_s1)[0, 1] > 0.999
        assert dry.size == wet.size
        assert 0.3 < np.corrcoef(dry, wet)[0, 1] < 0.99


def test_librispeech_like(tmp_path):
    root = make_librispeech_like(tmp_path, n_speakers=3, utts_per_speaker=2, duration=0.6)
    files = sorted(root.glob("*/*/*.flac"))
    assert len(files) == 6
    by_speaker = {}
    for path in files:
        spk, chapter = path.parent.parent.name, path.parent.name
        assert re.fullmatch(rf"{spk}-{chapter}-\d{{4}}", path.stem)
        assert (path.parent / f"{spk}-{chapter}.trans.txt").is_file()
        info = sf.info(str(path))
        assert (info.channels, info.samplerate, info.format, info.subtype) == (
            1, 16000, "FLAC", "PCM_16")
        by_speaker.setdefault(spk, []).append(dominant_f0(read(path), 16000))
    assert len(by_speaker) == 3
    # A speaker keeps its voice across utterances; speakers differ.
    means = sorted(np.mean(f) for f in by_speaker.values())
    assert all(max(f) / min(f) < 1.08 for f in by_speaker.values()), by_speaker
    assert all(hi / lo > 1.04 for lo, hi in zip(means, means[1:])), means


def test_noise_folder(tmp_path):
    root = make_noise_folder(tmp_path, n_files=3, sample_rate=8000, duration=0.5)
    files = sorted(root.glob("*.wav"))
    assert [p.name for p in files] == ["noise_000.wav", "noise_001.wav", "noise_002.wav"]
    noises = [read(p) for p in files]
    assert all(sf.info(str(p)).samplerate == 8000 for p in files)
    assert len({x.size for x in noises}) == 3
    assert all(0 < np.max(np.abs(x)) < 1 for x in noises)
    n = min(x.size for x in noises)
    assert abs(np.corrcoef(noises[0][:n], noises[1][:n])[0, 1]) < 0.5


# --------------------------------------------------------------------------- metadata, seeds


@pytest.mark.parametrize("num_spks", [2, 3])
def test_metadata_matches_the_files(libri2, libri3, num_spks):
    corpus = {2: libri2, 3: libri3}[num_spks]
    sources = [f"source_{k}_path" for k in range(1, num_spks + 1)]
    speakers = [f"s{k}" for k in range(1, num_spks + 1)]
    expected = {  # subset: (columns, folders of the path columns)
        "mix_both": (["mixture_ID", "mixture_path", *sources, "noise_path", "length"],
                     ["mix_both", *speakers, "noise"]),
        "mix_clean": (["mixture_ID", "mixture_path", *sources, "length"],
                      ["mix_clean", *speakers]),
        "mix_single": (["mixture_ID", "mixture_path", "source_1_path", "noise_path", "length"],
                       ["mix_single", "s1", "noise"]),
    }
    checked = 0
    for meta in corpus.glob("wav*k/*/metadata/*.csv"):
        split, subset = re.fullmatch(r"mixture_(.+)_(mix_\w+)\.csv", meta.name).groups()
        with open(meta, newline="") as f:
            rows = list(csv.reader(f))
        columns, folders = expected[subset]
        assert rows[0] == columns, meta
        split_dir = meta.parent.parent / split
        assert sorted(r[0] for r in rows[1:]) == stems(split_dir / subset)
        for row in rows[1:]:
            paths = row[1:-1]
            assert paths == [str(split_dir / d / f"{row[0]}.wav") for d in folders]
            assert all(p.startswith("/") and sf.info(p).frames == int(row[-1]) for p in paths)
            checked += 1
    assert checked > 0


def test_same_seed_same_output_other_seed_other_output(tmp_path):
    def corpus(name, seed):
        root = make_custom(tmp_path / name, splits=("test",), n_mixtures=1, duration=0.3,
                           seed=seed)
        (path,) = (root / "test" / "mixture").glob("*.wav")
        return path.name, read(path)

    a, b, c = corpus("a", 0), corpus("b", 0), corpus("c", 1)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert a[0] != c[0]
    n = min(a[1].size, c[1].size)
    assert not np.allclose(a[1][:n], c[1][:n])


@pytest.mark.parametrize("call, argument, value", [
    (lambda p: make_librimix(p, splits=("dev", "valid")), "splits", "valid"),
    (lambda p: make_librimix(p, modes=("mid",)), "modes", "mid"),
    (lambda p: make_librimix(p, num_spks=4), "num_spks", "4"),
    (lambda p: make_wham(p, splits=("train",)), "splits", "train"),
    (lambda p: make_custom(p, splits="dev"), "splits", "dev"),
    (lambda p: make_custom(p, sample_rate=500), "sample_rate", "500"),
    (lambda p: make_librispeech_like(p, ext="mp3"), "ext", "mp3"),
])
def test_bad_arguments_are_named(tmp_path, call, argument, value):
    with pytest.raises(ValueError, match=rf"{argument}.*{value}"):
        call(tmp_path)
    assert not any(tmp_path.iterdir())


def test_docstring_examples():
    assert doctest.testmod(synthetic).failed == 0
