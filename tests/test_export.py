"""SpeechBrain's ecosystem: ``nass export`` folders, hub folders, ``pretrained_separator``, ONNX."""

import csv
import importlib.util

import numpy as np
import pytest
import soundfile as sf
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import Checkpointer

from conftest import LIBRIMIX_HPARAMS as HPARAMS, ON_CPU, TINY, TINY_ARGS, TINY_SEPFORMER
from nass.model.checkpoints import CheckpointMismatchError
from nass.cli import main
from nass.inference import Separator
from nass.model.loading import load_model
from nass.model import Outputs
from nass.model.loading import load_pretrained
from nass.training.pretrained import init_from_pretrained
from nass.training.recipe import parse_arguments, run, start_from_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

BASELINE = ["--noise_output", "False", "--pcl_weight", "0"]
FIXED = ["--noise_assignment", "fixed"]


def train(corpus, out, *extra):
    """A tiny one-epoch LibriMix recipe run on the CPU; returns its output folder."""
    run([str(HPARAMS), "--data_folder", str(corpus), "--output_folder", str(out), *ON_CPU,
         *TINY_SEPFORMER, "--save_audio", "False", *extra])
    return out


def export(checkpoint, out_dir, *model_args):
    assert main(["export", "--hparams", str(HPARAMS), "--checkpoint", str(checkpoint),
                 "--out-dir", str(out_dir), *TINY_ARGS, *model_args]) == 0
    return out_dir


def results_of(folder):
    with open(folder / "test_results.csv") as fin:
        return {row["snt_id"]: row for row in csv.DictReader(fin)}


@pytest.fixture(scope="module")
def nass_export(libri2mix, tmp_path_factory):
    """A tiny NASS run (noise output last) and its export: ``(run folder, export folder)``."""
    tmp = tmp_path_factory.mktemp("nass")
    out = train(libri2mix, tmp / "run", *FIXED)
    return out, export(out / "save", tmp / "exported", *FIXED)


@pytest.fixture(scope="module")
def baseline_export(libri2mix, tmp_path_factory):
    """A tiny plain (2-mask) run and its export: ``(run folder, export folder)``."""
    tmp = tmp_path_factory.mktemp("baseline")
    out = train(libri2mix, tmp / "run", *BASELINE)
    return out, export(out / "save", tmp / "exported", *BASELINE)


def mixture(seconds=1.0, seed=0):
    return 0.1 * torch.randn(2, int(8000 * seconds), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- nass export


@pytest.mark.slow
def test_speechbrain_loads_the_export_and_gives_nass_outputs(nass_export, tmp_path, monkeypatch):
    from speechbrain.inference.separation import SepformerSeparation

    out, folder = nass_export
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "decoder.ckpt", "encoder.ckpt", "hyperparams.yaml", "masknet.ckpt"]
    monkeypatch.chdir(tmp_path)   # SpeechBrain must neither download nor write anything here
    loaded = SepformerSeparation.from_hparams(source=str(folder), run_opts={"device": "cpu"})
    assert list(tmp_path.iterdir()) == []
    assert not any(p.is_symlink() for p in folder.iterdir())
    nass_model = Separator.from_hparams(HPARAMS, out / "save", overrides={**TINY, "noise_assignment": "fixed"})
    mix = mixture()
    with torch.no_grad():
        theirs, ours = loaded.separate_batch(mix), nass_model.model(mix)
    assert theirs.shape == ours.shape == (2, 8000, 3)
    assert (theirs - ours).abs().max() <= 1e-5

    card = load_hyperpyyaml((folder / "hyperparams.yaml").read_text())
    assert load_pretrained(folder).model.outputs == Outputs(2, True, "fixed")
    assert card["num_spks"] == 3 and card["sample_rate"] == 8000
    assert card["nass"] == {"num_speakers": 2, "noise_output": True, "noise_assignment": "fixed",
                            "noise_index": 2}
    readme = (folder / "README.md").read_text()
    average = results_of(out)["avg"]
    assert f"| {float(average['si-snr_i']):.2f} dB | {float(average['sdr_i']):.2f} dB |" in readme
    assert "`N_epochs: 1`" in readme and "noise_assignment: fixed" in readme


@pytest.mark.slow
def test_separate_with_an_exported_folder_writes_speakers_and_noise(nass_export, tmp_path):
    out, folder = nass_export
    sf.write(tmp_path / "talk.wav", mixture(1.3)[0].numpy(), 16000)
    assert main(["separate", "--checkpoint", str(folder), str(tmp_path / "talk.wav"),
                 "--out-dir", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "talk_noise.wav", "talk_sources.json", "talk_spk1.wav", "talk_spk2.wav"]
    expected = Separator.from_hparams(HPARAMS, out / "save", overrides={**TINY, "noise_assignment": "fixed"}
                                      ).separate_file(tmp_path / "talk.wav")
    for name, signal in expected.items():
        written = sf.read(tmp_path / "out" / f"talk_{name}.wav", dtype="float32")[0]
        assert np.abs(written - signal.numpy()).max() <= 1e-5


def test_export_keeps_existing_files_and_needs_the_hparams(nass_export, tmp_path, capsys):
    out, folder = nass_export
    (tmp_path / "hyperparams.yaml").write_text("mine")
    assert main(["export", "--hparams", str(HPARAMS), "--checkpoint", str(out / "save"),
                 "--out-dir", str(tmp_path), *TINY_ARGS, *FIXED]) == 1
    assert (tmp_path / "hyperparams.yaml").read_text() == "mine"
    assert "use --overwrite" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(out / "save"), "--out-dir", str(tmp_path / "x")]) == 1
    assert "--format speechbrain needs --hparams" in capsys.readouterr().err


def hub_folder(folder, num_spks=2):
    """A folder as SpeechBrain's hub has them (model card yaml, no nass key), tiny."""
    folder.mkdir()
    model = load_model(HPARAMS, {**TINY, "num_spks": num_spks, "noise_output": False, "pcl_weight": 0})
    for name in ("encoder", "masknet", "decoder"):
        torch.save(getattr(model, name).state_dict(), folder / f"{name}.ckpt")
    (folder / "hyperparams.yaml").write_text(f"""\
sample_rate: 8000
num_spks: {num_spks}
Encoder: !new:speechbrain.lobes.models.dual_path.Encoder
  kernel_size: 16
  out_channels: 16
SBtfintra: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
  num_layers: 1
  d_model: 16
  nhead: 2
  d_ffn: 32
  dropout: 0
  use_positional_encoding: true
  norm_before: true
SBtfinter: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
  num_layers: 1
  d_model: 16
  nhead: 2
  d_ffn: 32
  dropout: 0
  use_positional_encoding: true
  norm_before: true
MaskNet: !new:speechbrain.lobes.models.dual_path.Dual_Path_Model
  num_spks: !ref <num_spks>
  in_channels: 16
  out_channels: 16
  num_layers: 2
  K: 20
  intra_model: !ref <SBtfintra>
  inter_model: !ref <SBtfinter>
  norm: ln
  linear_layer_after_inter_intra: false
  skip_around_intra: true
Decoder: !new:speechbrain.lobes.models.dual_path.Decoder
  in_channels: 16
  out_channels: 1
  kernel_size: 16
  stride: 8
  bias: false
modules:
  encoder: !ref <Encoder>
  decoder: !ref <Decoder>
  masknet: !ref <MaskNet>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
  loadables:
    masknet: !ref <MaskNet>
    encoder: !ref <Encoder>
    decoder: !ref <Decoder>
""")
    return folder, model


@pytest.mark.slow
def test_a_hub_folder_separates_into_speakers_only(tmp_path):
    folder, model = hub_folder(tmp_path / "sepformer-hub", num_spks=3)
    separator = Separator.from_pretrained(folder)
    assert separator.source_names == ["spk1", "spk2", "spk3"]
    mix = mixture()
    with torch.no_grad():
        assert torch.equal(separator.model(mix), model(mix))
    sf.write(tmp_path / "a.wav", mixture(0.8)[0].numpy(), 8000)
    assert main(["separate", "--checkpoint", str(folder), str(tmp_path / "a.wav")]) == 0
    assert sorted(p.name for p in tmp_path.glob("a_*.wav")) == ["a_spk1.wav", "a_spk2.wav", "a_spk3.wav"]


def test_not_a_pretrained_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "encoder.ckpt").write_bytes(b"")
    sf.write(tmp_path / "a.wav", mixture(0.5)[0].numpy(), 8000)
    assert main(["separate", "--checkpoint", str(tmp_path), str(tmp_path / "a.wav")]) == 1
    err = capsys.readouterr().err
    assert "is not a pretrained-model folder: it lacks hyperparams.yaml, masknet.ckpt" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- pretrained_separator


@pytest.mark.slow
def test_pretrained_separator_with_lr_0_gives_the_source_models_results(
        libri2mix, baseline_export, tmp_path):
    source, folder = baseline_export
    out = train(libri2mix, tmp_path / "run", *BASELINE, "--pretrained_separator", str(folder),
                "--lr", "0")
    assert "encoder, decoder and all 2 masks loaded" in (out / "log.txt").read_text()
    expected, got = results_of(source), results_of(out)
    assert expected.keys() == got.keys()
    for snt_id, row in expected.items():
        for key in ("sdr", "sdr_i", "si-snr", "si-snr_i"):
            # One device, the same weights: the same figures up to float32 rounding (the two
            # runs may sum in another order: the module's fixture runs on more threads).
            assert float(got[snt_id][key]) == pytest.approx(float(row[key]), abs=1e-4), (snt_id, key)


def test_a_two_mask_folder_starts_a_nass_run_with_a_fresh_noise_mask(baseline_export, tmp_path, caplog):
    _, folder = baseline_export
    *_, hparams = parse_arguments([str(HPARAMS), "--data_folder", str(tmp_path), "--output_folder",
                                str(tmp_path / "out"), *TINY_ARGS, "--pretrained_separator", str(folder)])
    separator = hparams["separator"]
    fresh = {k: v.clone() for k, v in separator.masknet.state_dict().items()}
    with caplog.at_level("INFO", logger="nass.model.loading"):
        start_from_pretrained(hparams, resuming=False)
    assert "speaker masks 1-2 loaded; the noise mask starts fresh" in caplog.text
    saved = {name: torch.load(folder / f"{name}.ckpt", weights_only=True)
             for name in ("encoder", "masknet", "decoder")}
    for name in ("encoder", "decoder"):
        state = getattr(separator, name).state_dict()
        assert all(torch.equal(state[k], saved[name][k]) for k in state)
    state = separator.masknet.state_dict()
    channels = 16   # TINY out_channels: mask k is rows [16 k, 16 (k + 1)) of conv2d
    for key in ("conv2d.weight", "conv2d.bias"):
        assert torch.equal(state[key][:2 * channels], saved["masknet"][key])
        assert torch.equal(state[key][2 * channels:], fresh[key][2 * channels:])
    others = [k for k in state if not k.startswith("conv2d.")]
    assert others and all(torch.equal(state[k], saved["masknet"][k]) for k in others)
    assert not torch.equal(state["conv2d.weight"], fresh["conv2d.weight"])


def test_a_folder_of_another_model_is_refused_with_reasons(tmp_path):
    folder, _ = hub_folder(tmp_path / "three", num_spks=3)
    plain = load_model(HPARAMS, {**TINY, "noise_output": False, "pcl_weight": 0})
    with pytest.raises(CheckpointMismatchError, match="makes 3 masks but this run makes 2 "
                                                      r"\(2 speakers\); a pretrained separator for it must make 2"):
        init_from_pretrained(plain, folder)
    bigger = load_model(HPARAMS, {**TINY, "N_encoder_out": 32, "out_channels": 32})
    with pytest.raises(CheckpointMismatchError, match="encoder.ckpt differs in 1 shape"):
        init_from_pretrained(bigger, folder)
    with pytest.raises(FileNotFoundError, match="not a pretrained-model folder: it lacks encoder.ckpt"):
        init_from_pretrained(plain, tmp_path / "nothing")


def test_a_resumed_run_does_not_reload_the_pretrained_folder(baseline_export, tmp_path, caplog):
    _, folder = baseline_export
    *_, hparams = parse_arguments([str(HPARAMS), "--data_folder", str(tmp_path), "--output_folder",
                                str(tmp_path / "out"), *TINY_ARGS, *BASELINE,
                                "--pretrained_separator", str(folder)])
    before = {k: v.clone() for k, v in hparams["separator"].state_dict().items()}
    with caplog.at_level("INFO", logger="nass.training.recipe"):
        start_from_pretrained(hparams, resuming=True)
    assert "pretrained_separator" in caplog.text and "not loaded" in caplog.text
    after = hparams["separator"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- ONNX


ONNX_REASON = "onnxruntime cannot be imported here (pip install onnxruntime onnx onnxscript)"
needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                       reason=ONNX_REASON)


@needs_onnxruntime
@pytest.mark.slow
def test_onnx_export_agrees_with_pytorch_and_separates_with_the_same_windows(tmp_path, capsys):
    from nass.export.onnx import MIN_SDR_DB, signal_to_difference_db
    from nass.inference.onnx_runtime import OnnxSeparator

    one_layer = [*TINY_ARGS, "--num_dual_path_layers", "1"]
    torch.manual_seed(3)
    model = load_model(HPARAMS, {**TINY, "num_dual_path_layers": 1})
    Checkpointer(tmp_path / "save", {n: getattr(model, n) for n in ("encoder", "masknet", "decoder")}
                 ).save_checkpoint(meta={"si-snr": 0.0})
    assert main(["export", "--format", "onnx", "--hparams", str(HPARAMS), "--checkpoint",
                 str(tmp_path / "save"), "--out-dir", str(tmp_path / "onnx"),
                 "--window-seconds", "0.5", *one_layer]) == 0
    assert "ONNX Runtime vs PyTorch" in capsys.readouterr().out
    graph = OnnxSeparator(tmp_path / "onnx" / "separator.onnx")
    assert (graph.outputs.num_spks, graph.outputs.noise_output, graph.sample_rate) == (2, True, 8000)
    for length in (16, 5555, 13001):   # the shortest input, and lengths it was not traced with
        mix = mixture(length / 8000, seed=length)
        with torch.no_grad():
            expected = model.eval()(mix).numpy()
        assert (signal_to_difference_db(expected, graph(mix).numpy()) >= MIN_SDR_DB).all()

    sf.write(tmp_path / "talk.wav", mixture(1.3)[0].numpy(), 8000)
    for name, source in {"onnx": ["--onnx", str(tmp_path / "onnx" / "separator.onnx")],
                         "torch": ["--hparams", str(HPARAMS), "--checkpoint", str(tmp_path / "save"),
                                   *one_layer]}.items():
        assert main(["separate", *source, str(tmp_path / "talk.wav"), "--chunk-seconds", "0.4",
                     "--out-dir", str(tmp_path / name)]) == 0
        used = {"onnx": f"ONNX model {source[1]}", "torch": "checkpoint "}[name]
        assert f"nass separate: using {used}" in capsys.readouterr().out
    for output in ("spk1", "spk2", "noise"):
        torch_out = sf.read(tmp_path / "torch" / f"talk_{output}.wav")[0]
        onnx_out = sf.read(tmp_path / "onnx" / f"talk_{output}.wav")[0]
        sdr = signal_to_difference_db(torch_out[None, :, None], onnx_out[None, :, None])
        assert sdr.min() >= MIN_SDR_DB


def test_onnx_option_takes_nothing_else(tmp_path, capsys):
    sf.write(tmp_path / "a.wav", mixture(0.5)[0].numpy(), 8000)
    assert main(["separate", "--onnx", "m.onnx", "--hparams", str(HPARAMS), str(tmp_path / "a.wav")]) == 1
    assert "--onnx takes the model from the ONNX file alone" in capsys.readouterr().err
