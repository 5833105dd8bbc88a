"""Data preparation: csvs from real layouts, and one error listing every bad file."""

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from nass.data.prepare import (
    DataFolderError,
    custom_layout,
    librimix_layout,
    prepare_layout,
    wham_layout,
)


def read_rows(path):
    with open(path) as fin:
        return list(csv.DictReader(fin))


def test_librimix_csvs_have_stems_sorted_rows_and_real_durations(libri2mix, tmp_path):
    csvs = prepare_layout(librimix_layout(libri2mix), tmp_path, 8000)
    assert set(csvs) == {"train", "valid", "test"}
    for split, folder in (("train", "train-100"), ("valid", "dev"), ("test", "test")):
        rows = read_rows(csvs[split])
        mix_dir = libri2mix / "wav8k" / "min" / folder / "mix_both"
        assert [r["ID"] for r in rows] == sorted(p.stem for p in mix_dir.glob("*.wav"))
        for row in rows:
            assert list(row) == ["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "noise_wav"]
            info = sf.info(row["mix_wav"])
            assert float(row["duration"]) == pytest.approx(info.frames / 8000, abs=1e-4)
            for key in ("s1", "s2", "noise"):
                assert row[f"{key}_wav"].endswith(f"/{key}/{row['ID']}.wav")


def test_clean_mixtures_and_three_speakers(libri3mix, tmp_path):
    layout = librimix_layout(libri3mix, num_spks=3, mixture="mix_clean", noise=False)
    rows = read_rows(prepare_layout(layout, tmp_path, 8000)["test"])
    assert list(rows[0]) == ["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "s3_wav"]
    assert "/mix_clean/" in rows[0]["mix_wav"]


@pytest.mark.slow
def test_wham_whamr_and_custom_layouts(wham_corpus, whamr_corpus, custom_corpus, tmp_path):
    wham = read_rows(prepare_layout(wham_layout(wham_corpus), tmp_path / "a", 8000)["valid"])
    assert "/cv/mix_both/" in wham[0]["mix_wav"]
    whamr = read_rows(prepare_layout(wham_layout(whamr_corpus, reverb=True), tmp_path / "b", 8000)["test"])
    assert "/tt/mix_both_reverb/" in whamr[0]["mix_wav"] and "/s1_anechoic/" in whamr[0]["s1_wav"]
    custom = read_rows(prepare_layout(custom_layout(custom_corpus), tmp_path / "c", 8000)["train"])
    assert "/train/mixture/" in custom[0]["mix_wav"] and "/source2/" in custom[0]["s2_wav"]


def test_every_bad_file_is_listed_and_nothing_is_overwritten(libri2mix, tmp_path):
    corpus = tmp_path / "Libri2Mix"
    shutil.copytree(libri2mix, corpus)
    save = tmp_path / "save"
    prepare_layout(librimix_layout(corpus), save, 8000)
    before = {p.name: p.read_text() for p in save.iterdir()}

    base = corpus / "wav8k" / "min"
    train_ids = sorted(p.stem for p in (base / "train-100" / "mix_both").glob("*.wav"))
    test_ids = sorted(p.stem for p in (base / "test" / "mix_both").glob("*.wav"))
    (base / "train-100" / "s2" / f"{train_ids[0]}.wav").unlink()                 # missing source
    (base / "train-100" / "noise" / f"{train_ids[1]}.wav").unlink()              # missing noise
    (base / "train-100" / "s1" / f"{train_ids[2]}.wav").write_bytes(b"not a wav")  # corrupt
    sf.write(base / "test" / "s1" / f"{test_ids[0]}.wav", np.zeros(0), 8000)     # empty
    sf.write(base / "test" / "s2" / f"{test_ids[1]}.wav", np.zeros(8000), 16000)  # wrong rate
    sf.write(base / "test" / "noise" / f"{test_ids[2]}.wav", np.zeros((8000, 2)), 8000)  # stereo
    shutil.rmtree(base / "dev")                                                   # missing split

    with pytest.raises(DataFolderError) as err:
        prepare_layout(librimix_layout(corpus), save, 8000)
    message = str(err.value)
    expected = [
        (f"s2/{train_ids[0]}.wav", "missing"),
        (f"noise/{train_ids[1]}.wav", "missing"),
        (f"s1/{train_ids[2]}.wav", "unreadable"),
        (f"s1/{test_ids[0]}.wav", "empty"),
        (f"s2/{test_ids[1]}.wav", "sample rate 16000 Hz, expected 8000 Hz"),
        (f"noise/{test_ids[2]}.wav", "2 channels, expected mono"),
        ("dev/mix_both", "folder missing"),
    ]
    for path, reason in expected:
        line = next((ln for ln in message.splitlines() if path in ln), None)
        assert line is not None and reason in line, (path, message)
    assert len(err.value.problems) >= len(expected)
    assert {p.name: p.read_text() for p in save.iterdir()} == before


def test_another_data_folder_is_not_served_stale_csvs(libri2mix, tmp_path):
    other = tmp_path / "Other2Mix"
    shutil.copytree(libri2mix, other)
    save = tmp_path / "save"
    first = read_rows(prepare_layout(librimix_layout(libri2mix), save, 8000)["test"])
    second = read_rows(prepare_layout(librimix_layout(other), save, 8000)["test"])
    assert all(str(libri2mix) in r["mix_wav"] for r in first)
    assert all(str(other) in r["mix_wav"] for r in second)


def test_unknown_train_set_is_refused(libri2mix):
    with pytest.raises(ValueError, match="train_set must be 'train-100' or 'train-360'"):
        librimix_layout(libri2mix, train_set="train-500")


def test_a_corpus_with_more_speakers_than_num_spks_is_refused(libri3mix, tmp_path):
    # Libri3Mix mixtures hold s3 too: training 2 outputs on them would be silently wrong.
    with pytest.raises(DataFolderError) as err:
        prepare_layout(librimix_layout(libri3mix, num_spks=2), tmp_path, 8000)
    assert all("s3: this corpus has more speakers than the 2" in p for p in err.value.problems)
    assert len(err.value.problems) == 3 and not list(tmp_path.iterdir())
    assert prepare_layout(librimix_layout(libri3mix, num_spks=3), tmp_path, 8000)


def test_a_missing_mixture_is_listed_not_dropped(libri2mix, tmp_path):
    corpus = tmp_path / "Libri2Mix"
    shutil.copytree(libri2mix, corpus)
    test = corpus / "wav8k" / "min" / "test"
    gone = sorted(test.glob("mix_both/*.wav"))[1]
    gone.unlink()
    with pytest.raises(DataFolderError) as err:
        prepare_layout(librimix_layout(corpus), tmp_path / "save", 8000)
    assert err.value.problems == [f"{gone}: missing (its targets exist)"]


def test_a_missing_data_folder_points_at_the_one_holding_wav8k(libri2mix, tmp_path):
    for wrong in (libri2mix.parent, libri2mix / "wav8k", libri2mix / "wav8k" / "min" / "test"):
        with pytest.raises(DataFolderError) as err:
            prepare_layout(librimix_layout(wrong), tmp_path, 8000)
        assert f"did you mean --data_folder {libri2mix} (it holds wav8k/min/" in str(err.value)
    with pytest.raises(DataFolderError, match="does not exist; --data_folder must be the folder "
                                              "holding wav8k/min/train-100/mix_both"):
        prepare_layout(librimix_layout(tmp_path / "nowhere" / "at" / "all"), tmp_path, 8000)


def test_skip_prep_checks_that_the_csvs_files_exist(libri2mix, tmp_path):
    corpus = tmp_path / "Libri2Mix"
    shutil.copytree(libri2mix, corpus)
    save = tmp_path / "save"
    prepare_layout(librimix_layout(corpus), save, 8000)
    gone = sorted((corpus / "wav8k" / "min" / "dev" / "s2").glob("*.wav"))[0]
    gone.unlink()
    with pytest.raises(DataFolderError) as err:
        prepare_layout(librimix_layout(corpus), save, 8000, skip_prep=True)
    assert str(err.value).startswith(f"skip_prep is True but the csvs in {save} has 1 problem")
    assert err.value.problems == [f"{gone.resolve()}: missing (named in valid.csv, row {gone.stem})"]
