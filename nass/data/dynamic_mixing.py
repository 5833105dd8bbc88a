"""Dynamic mixing: a fresh noisy mixture for every training example.

C utterances of C speakers (LibriSpeech, or WSJ0; a speaker is the first
folder under ``base_folder_dm``) and a WHAM! noise excerpt are drawn, resampled,
cropped to one length and mixed the LibriMix way (:mod:`nass.data.mixing`).
Mixture ``i`` of epoch ``e`` depends on ``(seed, e, i)`` only, so it is the same
whatever the number of loader workers or DDP processes, and a resumed run
draws the mixtures of the epoch it resumes.
"""

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
import torchaudio.functional as AF

from nass.data.mixing import NOISE_LUFS, SPEECH_LUFS, to_loudness, without_clipping

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac")


def _audio_files(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


class DynamicMixer:
    """Draws noisy C-speaker mixtures from a speech folder and a noise folder.

    Arguments
    ---------
    speech_folder : str or Path
        ``<speaker>/.../*.flac|wav``.
    noise_folder : str or Path
        Noise recordings (``*.wav``/``*.flac``), e.g. WHAM!'s ``tr/`` noise.
    num_spks : int
    sample_rate : int
        Output rate; files at another rate are resampled.
    length : int or None
        Samples per example (None: the shortest drawn utterance).
    seed : int
        With the epoch and the index, decides every mixture.

    Example
    -------
    >>> import tempfile
    >>> from nass.data.synthetic import make_librispeech_like, make_noise_folder
    >>> tmp = Path(tempfile.mkdtemp())
    >>> speech = make_librispeech_like(tmp / "ls", n_speakers=3)
    >>> noise = make_noise_folder(tmp / "noise", n_files=2)
    >>> mixer = DynamicMixer(speech, noise, num_spks=2, sample_rate=8000, length=4000, seed=0)
    >>> ex = mixer.mixture(epoch=1, index=0)
    >>> sorted(ex), ex["mix"].shape
    (['mix', 'noise', 's1', 's2'], torch.Size([4000]))
    >>> bool(torch.equal(ex["mix"], mixer.mixture(1, 0)["mix"]))
    True
    """

    def __init__(self, speech_folder, noise_folder, num_spks, sample_rate, length=None, seed=0):
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"dynamic mixing: seed must be a whole number >= 0, got {seed!r}")
        self.num_spks = num_spks
        self.sample_rate = sample_rate
        self.length = length
        self.seed = int(seed)
        self.speakers = defaultdict(list)
        speech_folder = Path(speech_folder)
        for path in _audio_files(speech_folder):
            self.speakers[path.relative_to(speech_folder).parts[0]].append(path)
        self.speakers = {k: v for k, v in self.speakers.items() if v}
        self.noises = _audio_files(noise_folder)
        problems = []
        if len(self.speakers) < num_spks:
            problems.append(
                f"base_folder_dm {speech_folder} has {len(self.speakers)} speaker folder(s) with "
                f"audio; {num_spks} are needed"
            )
        if not self.noises:
            problems.append(f"noise_folder_dm {noise_folder} holds no .wav/.flac noise files")
        if problems:
            raise ValueError("dynamic mixing: " + "; ".join(problems))

    def _load(self, path):
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        audio = torch.from_numpy(audio.mean(axis=1))
        if rate != self.sample_rate:
            audio = AF.resample(audio, rate, self.sample_rate)
        return audio

    @staticmethod
    def _crop(audio, length, rng):
        if audio.shape[0] < length:
            audio = audio.repeat(length // audio.shape[0] + 1)
        start = int(rng.integers(0, audio.shape[0] - length + 1))
        return audio[start : start + length]

    def _normalise(self, audio, lufs_range, rng):
        target = float(rng.uniform(*lufs_range))
        return to_loudness(audio.double().numpy(), target, self.sample_rate)

    def mixture(self, epoch, index):
        """Example ``index`` of ``epoch``: ``{"mix", "s1".."sC", "noise"}`` 1-D float tensors."""
        if epoch < 0 or index < 0:
            raise ValueError(f"dynamic mixing: epoch and index must be >= 0, got {epoch}, {index}")
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        names = list(self.speakers)
        chosen = rng.choice(len(names), size=self.num_spks, replace=False)
        utts = []
        for idx in chosen:
            files = self.speakers[names[idx]]
            utts.append(self._load(files[int(rng.integers(len(files)))]))
        length = min(u.shape[0] for u in utts)
        if self.length is not None:
            length = min(length, self.length)
        sources = [self._normalise(self._crop(u, length, rng), SPEECH_LUFS, rng) for u in utts]
        noise = self._load(self.noises[int(rng.integers(len(self.noises)))])
        sources.append(self._normalise(self._crop(noise, length, rng), NOISE_LUFS, rng))
        stacked = torch.from_numpy(np.stack(without_clipping(sources))).float()
        mix = stacked.sum(0)
        example = {"mix": mix}
        for k in range(self.num_spks):
            example[f"s{k + 1}"] = stacked[k]
        example["noise"] = stacked[-1]
        return example


def dynamic_mixing_dataset(hparams):
    """A training set of ``dm_examples_per_epoch`` freshly mixed examples.

    Reads ``base_folder_dm``, ``noise_folder_dm``, ``num_spks``,
    ``sample_rate``, ``training_signal_len``, ``dm_examples_per_epoch``,
    ``seed``, ``dataloader_opts`` and ``epoch_counter`` from ``hparams``. The
    epoch is the counter's ``current`` when an example is read: loader
    workers are started for each epoch and copy it then, which is why
    ``persistent_workers`` (workers kept from one epoch to the next) is refused.
    """
    for key in ("base_folder_dm", "noise_folder_dm"):
        folder = hparams.get(key)
        if not folder or not Path(folder).is_dir():
            raise ValueError(f"dynamic_mixing is True but {key} ({folder}) is not a folder")
    if hparams["dataloader_opts"].get("persistent_workers"):
        raise ValueError(
            "dynamic_mixing needs dataloader_opts persistent_workers: False (workers kept "
            "between epochs would mix every epoch as the first)"
        )
    mixer = DynamicMixer(
        hparams["base_folder_dm"],
        hparams["noise_folder_dm"],
        hparams["num_spks"],
        hparams["sample_rate"],
        length=hparams["training_signal_len"],
        seed=hparams["seed"],
    )
    epoch_counter = hparams["epoch_counter"]
    n = int(hparams["dm_examples_per_epoch"])
    data = sb.dataio.dataset.DynamicItemDataset({f"dm{i:06d}": {"index": i} for i in range(n)})
    keys = ["mix"] + [f"s{k}" for k in range(1, hparams["num_spks"] + 1)] + ["noise"]

    @sb.utils.data_pipeline.takes("index")
    @sb.utils.data_pipeline.provides(*[f"{k}_sig" for k in keys])
    def mix_pipeline(index):
        example = mixer.mixture(epoch_counter.current, index)
        for key in keys:
            yield example[key]

    sb.dataio.dataset.add_dynamic_item([data], mix_pipeline)
    sb.dataio.dataset.set_output_keys([data], ["id"] + [f"{k}_sig" for k in keys])
    return data
