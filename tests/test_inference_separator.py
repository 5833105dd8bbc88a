"""Separating recordings: the Python API, long inputs in windows, and which output is noise."""

import itertools
import math
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter
from speechbrain.utils.checkpoints import Checkpointer

from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY
from nass.audio import TruncatedAudioWarning
from nass.model.checkpoints import CheckpointMismatchError, CorruptCheckpointError, check_fit, read_meta
from nass.inference.windows import crossfade_weights, plan_windows, separate_in_chunks
from nass.audio import AudioInputError, output_paths, save_sources
from nass.inference import Separator, pick_noise, speech_likeness
from nass.model import Outputs
from nass.model.loading import load_model

# The project's real-speech corpus lies in shared/ beside the checkout (not in a user's clone).
REAL_LIBRI2MIX = (Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-librimix-real"
                  / "Libri2Mix" / "wav8k" / "min")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A save/ folder with a worse and a better tiny-model checkpoint; returns (folder, best state)."""
    save = tmp_path_factory.mktemp("save")
    torch.manual_seed(0)
    model = load_model(HPARAMS, TINY)
    parts = {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder}
    saver = Checkpointer(save, parts)
    saver.save_checkpoint(meta={"si-snr": -2.0})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    best = saver.save_checkpoint(meta={"si-snr": -5.0})
    saver.save_checkpoint(meta={"si-snr": 3.0})
    return save, best.path


@pytest.fixture(scope="module")
def separator(checkpoints):
    return Separator.from_hparams(HPARAMS, checkpoints[0], overrides=TINY)


def speech_like(seconds, sample_rate, seed=0):
    """A voice gliding in pitch, in syllables (4 per second), over a faint noise floor."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    f0 = (120 + 20 * seed) * (1 + 0.2 * torch.sin(2 * math.pi * 0.7 * t))
    phase = 2 * math.pi * torch.cumsum(f0, dim=0) / sample_rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 16))
    syllables = (torch.sin(2 * math.pi * 4 * t) > 0).float()
    return 0.1 * voice * syllables + 0.003 * torch.randn(t.shape, generator=g)


# --------------------------------------------------------------------------- loading


@pytest.mark.slow
def test_from_hparams_loads_the_best_checkpoint_and_says_which(checkpoints, separator, caplog):
    save, best = checkpoints
    assert separator.checkpoint == best
    for name in ("encoder", "masknet", "decoder"):
        saved = torch.load(best / f"{name}.ckpt", weights_only=True)
        loaded = getattr(separator.model, name).state_dict()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert not separator.model.training
    with caplog.at_level("INFO", logger="nass.inference"):
        Separator.from_hparams(HPARAMS, save, overrides=TINY)
    assert str(best) in caplog.text


def test_an_unreadable_best_checkpoint_is_skipped_with_a_warning(checkpoints, tmp_path, caplog):
    save, best = checkpoints
    copy = tmp_path / "save"
    shutil.copytree(save, copy)
    (copy / best.name / "decoder.ckpt").write_bytes(b"")
    with caplog.at_level("WARNING", logger="nass.model.checkpoints"):
        separator = Separator.from_hparams(HPARAMS, copy, overrides=TINY)
    assert f"Not using checkpoint {copy / best.name}: decoder.ckpt missing or empty" in caplog.text
    second = min((c for c in copy.glob("CKPT+*") if c.name != best.name),
                 key=lambda c: read_meta(c)["si-snr"])
    assert separator.checkpoint == second


def test_checkpoint_of_another_model_is_one_clear_error(checkpoints):
    with pytest.raises(CheckpointMismatchError,
                       match="masknet.ckpt makes 3 masks but the model makes 4"):
        Separator.from_hparams(HPARAMS, checkpoints[0], overrides={**TINY, "num_spks": 3})


def test_unknown_override_is_named(checkpoints):
    with pytest.raises(ValueError, match="--num_spk: .* has no such setting; did you mean --num_spks"):
        Separator.from_hparams(HPARAMS, checkpoints[0], overrides={**TINY, "num_spk": 3})


def test_overrides_that_do_not_shape_the_model_are_refused(checkpoints):
    for key, value in (("precision", "bf16"), ("batch_size", 4), ("lr", 0.1)):
        with pytest.raises(ValueError, match=f"--{key} changes nothing when separating"):
            Separator.from_hparams(HPARAMS, checkpoints[0], overrides={**TINY, key: value})


def test_the_baseline_switch_is_taken_when_separating():
    # --pcl_weight shapes no model, but the documented baseline switch needs it for the file to build.
    model = load_model(HPARAMS, {**TINY, "noise_output": False, "pcl_weight": 0})
    assert (model.num_spks, model.noise_output) == (2, False)


def test_loading_writes_nothing_and_keeps_the_callers_random_stream(checkpoints, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    Separator.from_hparams(HPARAMS, checkpoints[0], overrides=TINY)
    assert torch.equal(torch.rand(3), expected)
    assert list(tmp_path.iterdir()) == []   # no results/ folder from the recipe's checkpointer


# --------------------------------------------------------------------------- separating


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
def test_named_sources_at_the_inputs_rate_and_length(separator, sample_rate):
    waveform = speech_like(1.31, sample_rate)   # an odd number of samples at 44.1 kHz
    length = waveform.shape[0]
    sources = separator.separate_tensor(waveform, sample_rate)
    assert list(sources) == ["spk1", "spk2", "noise"]
    for signal in sources.values():
        assert signal.shape == (length,) and signal.dtype == torch.float32
        assert torch.isfinite(signal).all()


def test_multichannel_input_is_averaged_to_mono(separator):
    left, right = speech_like(1.0, 8000, seed=1), speech_like(1.0, 8000, seed=2).roll(300)
    stereo = separator.separate_tensor(torch.stack([left, right]), 8000)
    mono = separator.separate_tensor((left + right) / 2, 8000)
    assert all(torch.equal(stereo[k], mono[k]) for k in mono)


def test_separate_file_reads_other_formats_and_rates(separator, tmp_path):
    stereo = torch.stack([speech_like(0.8, 16000, seed=3), speech_like(0.8, 16000, seed=4)])
    path = tmp_path / "talk.flac"
    sf.write(path, stereo.T.numpy(), 16000, subtype="PCM_16")
    from_file = separator.separate_file(path)
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    from_tensor = separator.separate_tensor(torch.from_numpy(data.T.copy()), rate)
    assert all(torch.equal(from_file[k], from_tensor[k]) for k in from_tensor)
    assert from_file["spk1"].shape == (stereo.shape[1],)


@pytest.mark.parametrize("signal,reason", [
    (torch.zeros(0), "empty"),
    (torch.zeros(4000), "silent"),
    (torch.full((10,), 0.1), "too short: 10 samples"),
    (torch.tensor([0.1, float("nan")] * 100), "NaN"),
    (torch.stack([torch.full((4000,), 0.1), torch.full((4000,), -0.1)]),
     "its 2 channels cancel out when averaged to mono"),
])
def test_unusable_tensors_are_refused_with_the_reason(separator, signal, reason):
    with pytest.raises(AudioInputError, match=reason):
        separator.separate_tensor(signal, 8000)


@pytest.mark.parametrize("dtype,width,to_pcm", [
    (torch.int16, 2, lambda x: x * 2 ** 15),
    (torch.int32, 4, lambda x: x * 2 ** 31),
    (torch.uint8, 1, lambda x: x * 128 + 128),
])
def test_integer_pcm_is_scaled_as_soundfile_reads_files(separator, tmp_path, dtype, width, to_pcm):
    pcm = to_pcm(speech_like(0.5, 8000).clamp(-0.99, 0.99).double()).round().to(dtype)
    # The same samples as a WAV file of that width, read by soundfile: the reference scaling.
    with wave.open(str(tmp_path / "pcm.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(8000)
        out.writeframes(pcm.numpy().astype(pcm.numpy().dtype.newbyteorder("<")).tobytes())
    from_tensor = separator.separate_tensor(pcm, 8000)
    from_file = separator.separate_file(tmp_path / "pcm.wav")
    for name in from_file:
        assert torch.allclose(from_tensor[name], from_file[name], atol=1e-6), name
    assert from_tensor["spk1"].abs().max() < 1


@pytest.mark.parametrize("waveform,message", [
    (torch.ones(4000, dtype=torch.bool), "a bool tensor holds no audio samples"),
    (torch.ones(4000, dtype=torch.complex64), "a complex64 tensor holds no audio samples"),
    (torch.ones(4000, dtype=torch.int64), "int64 is not a PCM sample type"),
])
def test_tensors_that_are_not_audio_are_a_type_error(separator, waveform, message):
    with pytest.raises(TypeError, match=message):
        separator.separate_tensor(waveform, 8000)


@pytest.mark.parametrize("call,message", [
    (lambda s: s.separate_tensor(torch.randn(4000), "8000"), "sample_rate must be a number of Hz"),
    (lambda s: s.separate_tensor(torch.randn(4000), 8000, noise_output=True),
     "noise_output: must be a model output from 0 to 2, got True"),
    (lambda s: Separator(s.model, "8k"), "sample_rate must be a number of Hz, got '8k'"),
])
def test_arguments_of_the_wrong_kind_are_named(separator, call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call(separator)


def test_time_by_channels_tensors_are_refused(separator):
    # [T, channels] read as [channels, T] would separate 32 samples of an 800-channel average.
    with pytest.raises(AudioInputError, match=r"expected a \[channels, T\] waveform, got shape "
                                              r"\(800, 32\).*pass waveform.T"):
        separator.separate_tensor(torch.randn(800, 32), 8000)
    assert list(separator.separate_tensor(torch.randn(32, 800), 8000)) == ["spk1", "spk2", "noise"]


def test_a_truncated_wav_is_read_with_a_warning(separator, tmp_path):
    sf.write(tmp_path / "whole.wav", speech_like(1.0, 8000).numpy(), 8000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes((tmp_path / "whole.wav").read_bytes()[: 44 + 2 * 4000])
    with pytest.warns(TruncatedAudioWarning, match="declares 8000 samples .* only 4000"):
        sources = separator.separate_file(tmp_path / "cut.wav")
    assert sources["spk1"].shape == (4000,)


def test_too_short_is_judged_at_the_models_rate(separator):
    # 40 samples at 44.1 kHz are 7 at 8 kHz, under the 16-sample kernel.
    with pytest.raises(AudioInputError, match="too short: 40 samples at 44100 Hz"):
        separator.separate_tensor(torch.full((40,), 0.1), 44100)


def test_unusable_files_are_refused_naming_the_file(separator, tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    sf.write(tmp_path / "empty.wav", np.zeros(0), 8000)
    for name, reason in [("missing.wav", "no such file"), ("text.wav", "cannot be read as audio"),
                         ("empty.wav", "empty")]:
        with pytest.raises(AudioInputError, match=f"{name}: {reason}"):
            separator.separate_file(tmp_path / name)


def test_save_sources_writes_float_values_unchanged_and_never_overwrites(tmp_path):
    sources = {"spk1": torch.tensor([0.5, -2.0, 1e-9]), "noise": torch.tensor([0.0, 0.25, -0.125])}
    paths = output_paths(tmp_path / "in" / "talk.wav", list(sources), tmp_path / "out")
    save_sources(sources, 16000, paths)
    for name, path in paths.items():
        data, rate = sf.read(path, dtype="float32")
        assert sf.info(path).subtype == "FLOAT" and rate == 16000
        assert np.array_equal(data, sources[name].numpy())
    with pytest.raises(FileExistsError):
        save_sources(sources, 16000, paths)
    save_sources(sources, 16000, paths, overwrite=True, normalize=True)
    assert np.isclose(np.abs(sf.read(paths["spk1"])[0]).max(), 0.9)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["talk_noise.wav", "talk_spk1.wav"]


# --------------------------------------------------------------------------- which output is noise


class FixedOutputs(torch.nn.Module):
    """A stand-in model that returns given signals ``[T, S]`` (cut to the input's length)."""

    kernel_size = 16

    def __init__(self, signals, noise_assignment="pit"):
        super().__init__()
        self.signals = signals
        self.outputs = Outputs(signals.shape[-1] - 1, True, noise_assignment)

    def forward(self, mix):
        return self.signals[None, : mix.shape[1]]


def synthetic_sources(tmp_path, n_mixtures):
    """``[(s1, s2, noise), ...]`` of a synthetic noisy Libri2Mix test set."""
    from nass.data.synthetic import make_librimix

    folder = make_librimix(tmp_path, splits=("test",), n_mixtures=n_mixtures, duration=2.0,
                           seed=5) / "wav8k" / "min" / "test"
    return [tuple(sf.read(folder / sub / mix.name, dtype="float32")[0] for sub in ("s1", "s2", "noise"))
            for mix in sorted((folder / "mix_both").glob("*.wav"))]


def assert_noise_picked_in_every_order(s1, s2, noise, sample_rate=8000):
    signals = [torch.as_tensor(s1), torch.as_tensor(s2), torch.as_tensor(noise)]
    for order in itertools.permutations(range(3)):
        outputs = torch.stack([signals[k] for k in order], dim=-1)
        assert order[pick_noise(outputs, sample_rate)] == 2, f"order {order}"


@pytest.mark.slow
def test_noise_is_picked_among_synthetic_sources(tmp_path):
    for s1, s2, noise in synthetic_sources(tmp_path, n_mixtures=6):
        assert_noise_picked_in_every_order(s1, s2, noise)


@pytest.mark.skipif(not REAL_LIBRI2MIX.is_dir(),
                    reason=f"the real-speech mini Libri2Mix is only on the developers' machine "
                           f"({REAL_LIBRI2MIX})")
@pytest.mark.parametrize("split", ["test", "dev", "train-100"])
@pytest.mark.slow
def test_noise_is_picked_among_real_sources(split):
    mixtures = sorted((REAL_LIBRI2MIX / split / "mix_both").glob("*.wav"))
    assert mixtures
    for mixture in mixtures:
        s1, s2, noise = (sf.read(REAL_LIBRI2MIX / split / sub / mixture.name)[0]
                         for sub in ("s1", "s2", "noise"))
        assert_noise_picked_in_every_order(s1, s2, noise)


def test_noise_of_any_colour_or_rate_scores_eulers_constant_and_speech_more():
    noise = torch.randn(48000, generator=torch.Generator().manual_seed(0))
    # Rumble has 36 dB more power at DC than at 4 kHz, hiss 36 dB less.
    rumble = torch.as_tensor(lfilter([1.0], [1.0, -0.97], noise.numpy()))
    hiss = torch.as_tensor(lfilter([1.0, -0.97], [1.0], noise.numpy()))
    for signal, rate in [(noise, 8000), (noise, 16000), (rumble, 8000), (hiss, 8000)]:
        assert abs(speech_likeness(signal, rate) - 0.5772) < 0.05
    for rate in (8000, 16000):
        assert speech_likeness(speech_like(4.0, rate), rate) > 1.0


def test_pit_model_gets_its_noise_named_and_fixed_model_its_last_output(tmp_path):
    s1, s2, noise = (torch.as_tensor(x) for x in synthetic_sources(tmp_path, n_mixtures=1)[0])
    mixture = s1 + s2 + noise
    signals = torch.stack([s2, noise, s1], dim=-1)
    pit = Separator(FixedOutputs(signals, "pit"), 8000).separate_tensor(mixture, 8000)
    assert torch.equal(pit["noise"], noise)
    assert torch.equal(pit["spk1"], s2) and torch.equal(pit["spk2"], s1)
    fixed = Separator(FixedOutputs(signals, "fixed"), 8000).separate_tensor(mixture, 8000)
    assert torch.equal(fixed["noise"], s1)


# --------------------------------------------------------------------------- long inputs


def test_windows_cover_the_input_and_their_weights_sum_to_one():
    for length, chunk in [(1000, 400), (1001, 400), (5000, 800), (401, 400)]:
        windows = plan_windows(length, chunk)
        overlap = round(0.25 * chunk)
        total = torch.zeros(length)
        for index, (start, stop) in enumerate(windows):
            assert stop - start <= chunk and stop - start > overlap
            total[start:stop] += crossfade_weights(stop - start, overlap, fade_in=index > 0,
                                                   fade_out=index < len(windows) - 1)
        assert windows[0][0] == 0 and windows[-1][1] == length
        assert torch.allclose(total, torch.ones(length), atol=1e-6)


def permuting_separator(sources, chunk_size, permute_noise, seed=0):
    """A fake separator returning the true sources of its window, permuted anew per window.

    Windows come in the order of :func:`plan_windows`, which says where each starts.
    """
    rng = np.random.default_rng(seed)
    windows = iter(plan_windows(sources.shape[0], chunk_size))
    calls = []

    def separate(window):
        start, stop = next(windows)
        calls.append(window.shape[1])
        assert torch.allclose(window[0], sources[start:stop].sum(dim=-1))
        n_free = sources.shape[-1] - (0 if permute_noise else 1)
        order = list(rng.permutation(n_free)) + list(range(n_free, sources.shape[-1]))
        return sources[None, start:stop][..., order]

    return separate, calls


@pytest.mark.parametrize("fixed_last", [False, True])
def test_each_source_stays_on_its_output_across_windows(tmp_path, fixed_last):
    s1, s2, noise = synthetic_sources(tmp_path, n_mixtures=1)[0]
    # A faint floor, as in recordings, so that no source is exactly zero in an overlap.
    floor = 1e-4 * torch.randn(len(s1), 3, generator=torch.Generator().manual_seed(0))
    sources = torch.stack([torch.as_tensor(x) for x in (s1, s2, noise)], dim=-1) + floor
    separate, calls = permuting_separator(sources, 2000, permute_noise=not fixed_last)
    est = separate_in_chunks(separate, sources.sum(dim=-1)[None], chunk_size=2000,
                             fixed_last=fixed_last)
    assert len(calls) > 4 and max(calls) <= 2000
    # Whatever order the first window had holds to the end; a fixed noise slot never moves.
    first = [int(torch.argmax((est[0, :, k, None] * sources).sum(0))) for k in range(3)]
    assert sorted(first) == [0, 1, 2]
    if fixed_last:
        assert first[2] == 2
    assert torch.allclose(est[0], sources[:, first], atol=1e-5)


@pytest.mark.slow
def test_short_inputs_give_exactly_the_unchunked_result(separator):
    mixture = speech_like(2.0, 8000)
    whole = Separator(separator.model, 8000, chunk_seconds=math.inf).separate_tensor(mixture, 8000)
    one_chunk = Separator(separator.model, 8000, chunk_seconds=2.0).separate_tensor(mixture, 8000)
    assert all(torch.equal(whole[k], one_chunk[k]) for k in whole)
    with torch.no_grad():
        chunked = separate_in_chunks(separator.model, mixture[None], chunk_size=16000)
        assert torch.equal(chunked, separator.model(mixture[None]))


class RecordingLengths(torch.nn.Module):
    """Wraps a model and records the length of every input it is given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.lengths = model, []
        self.outputs, self.kernel_size = model.outputs, 16

    def forward(self, mix):
        self.lengths.append(mix.shape[1])
        return self.model(mix)


def test_long_inputs_are_separated_window_by_window(separator):
    model = RecordingLengths(separator.model)
    sources = Separator(model, 8000, chunk_seconds=0.5).separate_tensor(speech_like(3.3, 16000), 16000)
    # 3.3 s is 26400 samples at the model's 8 kHz: windows of 4000 samples at most.
    assert model.lengths == [stop - start for start, stop in plan_windows(26400, 4000)]
    assert len(model.lengths) > 3
    assert all(s.shape == (int(3.3 * 16000),) and torch.isfinite(s).all() for s in sources.values())


def test_separating_makes_no_inference_tensors(separator):
    # Tensors made while separating may be cached (the PIT permutations of the
    # window matching); inference tensors there would break a later training
    # step ("Inference tensors cannot be saved for backward").
    sources = Separator(separator.model, 8000, chunk_seconds=0.5).separate_tensor(
        speech_like(2.0, 8000), 8000)
    assert not any(signal.is_inference() for signal in sources.values())


def test_too_small_chunks_are_refused(separator):
    with pytest.raises(ValueError, match="chunk_seconds must be at least"):
        Separator(separator.model, 8000, chunk_seconds=0.001)


def test_a_checkpoint_file_torch_refuses_to_unpickle_is_called_corrupt(checkpoints, tmp_path):
    copy = tmp_path / "save"
    shutil.copytree(checkpoints[1], copy)
    # Loadable only by running its pickled code (weights_only=False): refused, not "does not fit".
    torch.save({"weight": torch.zeros(1), "hook": print}, copy / "masknet.ckpt")
    model = load_model(HPARAMS, TINY)
    with pytest.raises(CorruptCheckpointError, match=r"is corrupt: masknet.ckpt \(UnpicklingError\)") as err:
        check_fit({"masknet": model.masknet}, copy)
    assert "weights_only" not in str(err.value)


class RecordingBatches(RecordingLengths):
    """Wraps a model and records the shape of every input it is given."""

    def forward(self, mix):
        self.lengths.append(tuple(mix.shape))
        return self.model(mix)


def test_batched_windows_and_recordings_equal_one_at_a_time(separator, tmp_path):
    # 8 kHz, 0.5 s windows (4000 samples): a long recording of many windows and
    # an odd last one, two short ones of one length (batched together), one of another.
    seconds = [3.3, 0.4, 0.4, 0.7]
    paths = []
    for k, length in enumerate(seconds):
        paths.append(tmp_path / f"talk{k}.wav")
        sf.write(paths[-1], speech_like(length, 8000, seed=k).numpy(), 8000, subtype="FLOAT")
    one_by_one = Separator(separator.model, 8000, chunk_seconds=0.5, batch_size=1)
    model = RecordingBatches(separator.model)
    batched = Separator(model, 8000, chunk_seconds=0.5, batch_size=4)
    assert batched.batch_size == 4
    together = batched.separate_files(paths)
    # Equal-length windows share batches of at most 4; no batch mixes lengths.
    assert max(shape[0] for shape in model.lengths) == 4
    assert sum(shape[0] for shape in model.lengths) == sum(
        len(plan_windows(round(s * 8000), 4000)) for s in seconds)
    assert (2, 3200) in model.lengths
    for path, sources in zip(paths, together):
        alone = one_by_one.separate_file(path)
        assert list(sources) == list(alone) and sources.report == alone.report
        for name in alone:
            assert torch.allclose(sources[name], alone[name], atol=1e-5, rtol=1e-4), name


def test_a_recording_that_cannot_be_separated_leaves_the_others_batched(separator):
    batched = Separator(separator.model, 8000, chunk_seconds=0.5, batch_size=4)
    recordings = [("good", speech_like(0.4, 8000), 8000), ("silent", torch.zeros(3200), 8000),
                  ("also good", speech_like(0.4, 8000, seed=1), 8000)]
    results = dict(batched.separate_each(recordings))
    assert isinstance(results["silent"], AudioInputError) and "silent" in str(results["silent"])
    assert torch.allclose(results["also good"]["spk1"],
                          batched.separate_tensor(speech_like(0.4, 8000, seed=1), 8000)["spk1"],
                          atol=1e-6)


def test_a_batch_size_that_is_not_a_whole_number_is_refused(separator):
    for wrong in (0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a whole number"):
            Separator(separator.model, 8000, batch_size=wrong)


@pytest.mark.slow
def test_compiled_separation_equals_eager_and_compiles_once(separator):
    import torch._dynamo

    torch._dynamo.reset()
    eager = Separator(separator.model, 8000, chunk_seconds=0.5, batch_size=3)
    compiled = Separator(separator.model, 8000, chunk_seconds=0.5, batch_size=3, compile=True)
    first, second = speech_like(2.3, 8000), speech_like(1.7, 8000, seed=1)  # 6 and 4 windows
    out = compiled.separate_tensor(first, 8000)
    assert compiled.compile_note.startswith("model compiled for 3 x 0.5 s windows")
    # Another length, a batch not full: the same compiled shape, nothing compiled again.
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = compiled.separate_tensor(second, 8000)
    for result, mixture in ((out, first), (again, second)):
        reference = eager.separate_tensor(mixture, 8000)
        for name in reference:
            assert torch.allclose(result[name], reference[name], atol=1e-4, rtol=1e-3), name
