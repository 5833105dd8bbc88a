"""Data preparation: check a corpus folder, then write one csv per split.

Every corpus is a *layout* (:class:`Layout`): per split, a mixture folder and
one folder per target (speakers, then noise) holding files of the same names;
:func:`librimix_layout`, :func:`wham_layout` and :func:`custom_layout` only
name the folders. The whole folder is checked before anything is written
(every missing, unreadable, empty, multichannel or wrongly sampled file is
listed in one :class:`DataFolderError`); the csvs are rebuilt from the folder
on every run unless ``skip_prep`` trusts them.
"""

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from nass.files import write_text

SPLITS = ("train", "valid", "test")


class DataFolderError(ValueError):
    """A corpus folder with missing or bad files; ``problems`` lists them all."""

    def __init__(self, data_folder, problems, subject="data folder"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{subject} {data_folder} has {len(self.problems)} problem(s); nothing was "
            f"written:\n{lines}"
        )


@dataclass
class Layout:
    """Where one corpus keeps its files.

    Arguments
    ---------
    root : Path
        The folder holding the split folders.
    splits : dict
        ``{"train": "train-100", "valid": "dev", "test": "test"}``: our split
        name to the corpus's folder name.
    mixture : str
        Mixture folder inside each split (``mix_both``).
    targets : dict
        csv column prefix to folder: ``{"s1": "s1", "s2": "s2", "noise": "noise"}``.
    data_folder : Path
        The folder the user names (``--data_folder``); ``root`` by default.
    more_speakers : str, optional
        A speaker folder whose presence means that the mixtures hold more
        speakers than the targets (``s3`` beside a 2-speaker layout).
    """

    root: Path
    splits: dict
    mixture: str
    targets: dict = field(default_factory=dict)
    data_folder: Path = None
    more_speakers: str = None

    def __post_init__(self):
        if self.data_folder is None:
            self.data_folder = self.root


def mixture_folder(noisy):
    """``mix_both`` (speech + noise) for noisy separation, else ``mix_clean``."""
    return "mix_both" if noisy else "mix_clean"


def librimix_layout(data_folder, num_spks=2, sample_rate=8000, mode="min",
                     train_set="train-100", mixture="mix_both", noise=True):
    """Libri2Mix/Libri3Mix: ``data_folder`` is the ``LibriNMix`` folder."""
    if train_set not in ("train-100", "train-360"):
        raise ValueError(f"train_set must be 'train-100' or 'train-360', got {train_set!r}")
    return _speaker_layout(
        Path(data_folder) / f"wav{sample_rate // 1000}k" / mode,
        {"train": train_set, "valid": "dev", "test": "test"},
        mixture, [f"s{k}" for k in range(1, num_spks + 2)], noise, data_folder,
    )


def wham_layout(data_folder, sample_rate=8000, mode="min", mixture="mix_both",
                noise=True, reverb=False, reverberant_targets=False):
    """WHAM! (or WHAMR! with ``reverb``): ``data_folder`` holds ``wav8k/``."""
    root = Path(data_folder) / f"wav{sample_rate // 1000}k" / mode
    splits = {"train": "tr", "valid": "cv", "test": "tt"}
    if not reverb:
        return _speaker_layout(root, splits, mixture, ["s1", "s2", None], noise, data_folder)
    suffix = "_reverb" if reverberant_targets else "_anechoic"
    return _speaker_layout(
        root, splits, f"{mixture}_reverb", [f"s1{suffix}", f"s2{suffix}", None], noise,
        data_folder,
    )


def custom_layout(data_folder, num_spks=2, noise=True):
    """The reference project's layout: ``{train,valid,test}/{mixture,source1..,noise}``."""
    return _speaker_layout(
        Path(data_folder), {s: s for s in SPLITS}, "mixture",
        [f"source{k}" for k in range(1, num_spks + 2)], noise, data_folder,
    )


def _speaker_layout(root, splits, mixture, speaker_dirs, noise, data_folder):
    """``speaker_dirs``: the speakers' folders, then the next speaker's (or None)."""
    *speakers, more = speaker_dirs
    targets = {f"s{k}": d for k, d in enumerate(speakers, start=1)}
    if noise:
        targets["noise"] = "noise"
    return Layout(Path(root), splits, mixture, targets, Path(data_folder), more)


def csv_paths(save_folder):
    """``{split: path}`` of the csvs :func:`prepare_layout` writes."""
    return {split: Path(save_folder) / f"{split}.csv" for split in SPLITS}


def prepare_layout(layout, save_folder, sample_rate, splits=SPLITS, skip_prep=False):
    """Checks ``layout`` and writes ``<save_folder>/{train,valid,test}.csv``.

    Arguments
    ---------
    layout : Layout
    save_folder : str or Path
    sample_rate : int
        Every file must have it.
    splits : sequence of str
        Which of train/valid/test to prepare (``test_only`` needs just test).
    skip_prep : bool
        Trust existing csvs (they must exist).

    Returns
    -------
    dict
        ``{split: csv path}``.

    Raises
    ------
    DataFolderError
        Listing every missing or bad file or folder.
    """
    save_folder = Path(save_folder)
    paths = {s: p for s, p in csv_paths(save_folder).items() if s in splits}
    if skip_prep:
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise FileNotFoundError(f"skip_prep is True but these csvs do not exist: {missing}")
        problems = [problem for path in paths.values() for problem in _missing_csv_files(path)]
        if problems:
            raise DataFolderError(save_folder, problems, subject="skip_prep is True but the csvs in")
        return paths
    check_data_folder(layout)
    problems, tables = [], {}
    for split in splits:
        tables[split] = _scan_split(layout, layout.splits[split], sample_rate, problems)
    if problems:
        raise DataFolderError(layout.root, problems)

    save_folder.mkdir(parents=True, exist_ok=True)
    columns = ["ID", "duration", "mix_wav"] + [f"{t}_wav" for t in layout.targets]
    for split, rows in tables.items():
        text = _csv_text(columns, rows)
        if not paths[split].exists() or paths[split].read_text() != text:
            write_text(paths[split], text)
    return paths


def _scan_split(layout, split_dir, sample_rate, problems):
    """Rows ``[id, duration, mix, targets...]`` of one split; appends problems."""
    base = layout.root / split_dir
    mix_dir = base / layout.mixture
    folders = [mix_dir] + [base / d for d in layout.targets.values()]
    missing = [d for d in folders if not d.is_dir()]
    if missing:
        problems.extend(f"{d}: folder missing" for d in missing)
        return []
    if layout.more_speakers and (base / layout.more_speakers).is_dir():
        problems.append(
            f"{base / layout.more_speakers}: this corpus has more speakers than the "
            f"{len(folders) - 1 - ('noise' in layout.targets)} the hparams separate (num_spks); "
            f"its mixtures hold {layout.more_speakers} too. Use the hparams of that many "
            f"speakers (e.g. sepformer-libri3mix.yaml) or the matching data folder"
        )
        return []
    stems = sorted(p.stem for p in mix_dir.glob("*.wav"))
    if not stems:
        problems.append(f"{mix_dir}: no .wav files")
        return []
    target_stems = set().union(*({p.stem for p in d.glob("*.wav")} for d in folders[1:]))
    for stem in sorted(target_stems - set(stems)):
        problems.append(f"{mix_dir / (stem + '.wav')}: missing (its targets exist)")
    rows = []
    for stem in stems:
        files = [d / f"{stem}.wav" for d in folders]
        infos = [_check_wav(f, sample_rate, problems) for f in files]
        if any(info is None for info in infos):
            continue
        frames = [info.frames for info in infos]
        if len(set(frames)) != 1:
            problems.append(
                f"{mix_dir / (stem + '.wav')}: mixture and targets differ in length "
                f"({', '.join(f'{f.parent.name}={n}' for f, n in zip(files, frames))} samples)"
            )
            continue
        rows.append([stem, f"{frames[0] / sample_rate:.4f}"] + [str(f.resolve()) for f in files])
    return rows


def check_data_folder(layout):
    """Raises :class:`DataFolderError` unless the layout's folder exists, suggesting one near.

    A quick first check, before a run writes anything: :func:`prepare_layout`
    checks every file.
    """
    if not layout.root.is_dir():
        raise DataFolderError(layout.data_folder, [_missing_root(layout)])


def _missing_root(layout):
    """Says that the data folder lacks the layout's folders, and where they are, if near."""
    inside = layout.root.relative_to(layout.data_folder)
    marker = inside / next(iter(layout.splits.values())) / layout.mixture
    start = layout.data_folder
    while not start.is_dir() and start != start.parent:
        start = start.parent
    near = [start, *list(start.parents)[:3]]
    near += [d for d in start.glob("*") if d.is_dir()] + [d for d in start.glob("*/*") if d.is_dir()]
    found = [d for d in near if (d / marker).is_dir()]
    hint = (f"; did you mean --data_folder {found[0]} (it holds {marker})?" if found else
            f"; --data_folder must be the folder holding {marker}")
    what = "does not exist" if not layout.data_folder.exists() else f"has no {inside}"
    if str(inside) == ".":
        what = "does not exist" if not layout.data_folder.exists() else "is not a folder"
    return f"{layout.data_folder}: {what}{hint}"


def _missing_csv_files(csv_path):
    """The audio files a prepared csv names that are not there."""
    with open(csv_path, newline="") as fin:
        rows = list(csv.DictReader(fin))
    return [
        f"{value}: missing (named in {csv_path.name}, row {row.get('ID', index)})"
        for index, row in enumerate(rows, start=1)
        for key, value in row.items()
        if key.endswith("_wav") and not Path(value).is_file()
    ]


def _check_wav(path, sample_rate, problems):
    """soundfile info of a good file, else None with the reason in ``problems``."""
    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        problems.append(f"{path}: unreadable ({err})")
        return None
    if info.frames == 0:
        problems.append(f"{path}: empty (0 samples)")
    elif info.channels != 1:
        problems.append(f"{path}: {info.channels} channels, expected mono")
    elif info.samplerate != sample_rate:
        problems.append(f"{path}: sample rate {info.samplerate} Hz, expected {sample_rate} Hz")
    else:
        return info
    return None


def _csv_text(columns, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()

