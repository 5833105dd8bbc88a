"""Separating in bf16 (and fp16 on CUDA): what runs in which precision, agreement with fp32."""

import warnings
from pathlib import Path

import pytest
import soundfile as sf
import torch
from speechbrain.utils.checkpoints import Checkpointer

import nass
from conftest import LIBRIMIX_HPARAMS as HPARAMS, TINY

FIXED = {**TINY, "noise_assignment": "fixed"}
from nass.cli import main
from nass.inference import Separator
from nass.model.loading import load_model
from nass.metrics import si_snr
from nass.model.precision import (NORMS, SlowPrecisionWarning, precision_dtype, set_precision,
                                  set_tf32)

pytestmark = pytest.mark.usefixtures("one_thread")
ASSETS = Path(nass.__file__).parent / "assets"


def real_mixture():
    """Two of the shipped read-speech recordings and a real noise, 2 s at 8 kHz."""
    read = [sf.read(ASSETS / "speech" / name, dtype="float32")[0][:16000]
            for name in ("example1.wav", "example2.wav")]
    noise = sf.read(ASSETS / "noise" / "noise_a.wav", dtype="float32")[0][:16000]
    return torch.from_numpy(read[0] + read[1] + 0.3 * noise)


def test_bf16_runs_the_blocks_in_bf16_and_keeps_norms_mask_head_and_codec_fp32():
    torch.manual_seed(0)
    model = load_model(HPARAMS, TINY).eval()
    keys = list(model.state_dict())
    set_precision(model, "bf16")
    assert list(model.state_dict()) == keys
    masknet = model.masknet
    norms = {id(m) for m in masknet.modules() if isinstance(m, NORMS)}
    head = [masknet.conv2d, masknet.output, masknet.output_gate, masknet.end_conv1x1]
    kept = {id(p) for m in [*head, *(m for m in masknet.modules() if id(m) in norms)]
            for p in m.parameters()}
    assert norms and kept
    for p in masknet.parameters():
        assert p.dtype == (torch.float32 if id(p) in kept else torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.encoder.parameters())
    assert all(p.dtype == torch.float32 for p in model.decoder.parameters())
    assert model(torch.randn(1, 800)).dtype == torch.float32
    with pytest.raises(ValueError, match="not in fp32"):
        set_precision(model, "bf16")


@pytest.mark.slow
def test_bf16_separation_agrees_with_fp32():
    torch.manual_seed(1)
    exact = Separator(load_model(HPARAMS, FIXED), 8000)
    torch.manual_seed(1)
    fast = Separator(load_model(HPARAMS, FIXED), 8000, precision="bf16")
    assert fast.precision == "bf16"
    mix = real_mixture()
    ref, out = exact.separate_tensor(mix, 8000), fast.separate_tensor(mix, 8000)
    assert list(out) == list(ref) == ["spk1", "spk2", "noise"]
    for name in ref:
        assert out[name].dtype == torch.float32
        assert not torch.equal(out[name], ref[name])  # bf16 did run
        assert si_snr(out[name], ref[name]) > 30, name


def test_fp16_on_a_cpu_without_native_fp16_and_unknown_precisions_are_refused(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(nass.model.precision, "cpu_has_fp16_matmul", lambda: False)
    model = load_model(HPARAMS, TINY)
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA device or a CPU with native"):
        Separator(model, 8000, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16, fp16, got 'fp8'"):
        Separator(model, 8000, precision="fp8")
    sf.write(tmp_path / "talk.wav", real_mixture().numpy(), 8000)
    # Refused before anything is loaded: the checkpoint need not even exist.
    status = main(["separate", "--hparams", str(HPARAMS), "--checkpoint", str(tmp_path / "save"),
                   "--precision", "fp16", str(tmp_path / "talk.wav")]
                  + [arg for k, v in TINY.items() for arg in (f"--{k}", str(v))])
    assert status == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "nass separate: error: --precision fp16: precision fp16 needs a CUDA device or a CPU "
        "with native fp16 matrix products (AVX512-FP16 or AMX-FP16), and device cpu has none; "
        "use bf16 or fp32"]
    assert not list(tmp_path.glob("talk_*.wav"))


@pytest.mark.slow
def test_fp16_on_a_cpu_with_native_fp16_agrees_with_fp32(monkeypatch):
    # Forced on: a CPU without native fp16 computes the same values, only slower.
    monkeypatch.setattr(nass.model.precision, "cpu_has_fp16_matmul", lambda: True)
    torch.manual_seed(1)
    exact = Separator(load_model(HPARAMS, FIXED), 8000)
    torch.manual_seed(1)
    fast = Separator(load_model(HPARAMS, FIXED), 8000, precision="fp16")
    block = fast.model.masknet.dual_mdl[0].intra_mdl.mdl.layers[0]
    assert block.pos_ffn.ffn[0].weight.dtype == torch.float16
    assert fast.model.masknet.conv2d.weight.dtype == torch.float32
    mix = real_mixture()
    ref, out = exact.separate_tensor(mix, 8000), fast.separate_tensor(mix, 8000)
    for name in ref:
        assert not torch.equal(out[name], ref[name])
        # 3 more mantissa bits than bf16: closer to fp32 than bf16's 30 dB.
        assert si_snr(out[name], ref[name]) > 45, name


def test_an_overflow_in_half_precision_is_an_error_not_silent_nans(monkeypatch):
    monkeypatch.setattr(nass.model.precision, "cpu_has_fp16_matmul", lambda: True)
    torch.manual_seed(1)
    separator = Separator(load_model(HPARAMS, FIXED), 8000,
                          precision="fp16")
    # Weights at the edge of fp16's range (65504): the feed-forward layer's sums overflow it.
    weight = separator.model.masknet.dual_mdl[0].intra_mdl.mdl.layers[0].pos_ffn.ffn[0].weight
    with torch.no_grad():
        weight.copy_(6e4 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
                     .sign())
    with pytest.raises(RuntimeError, match="overflowed in fp16 on this input"):
        separator.separate_tensor(real_mixture(), 8000)


def test_bf16_on_a_cpu_without_bf16_kernels_is_one_warning_naming_fp32(tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(nass.model.precision, "cpu_has_bf16_matmul", lambda: False)
    with pytest.warns(SlowPrecisionWarning, match="bf16 runs many times slower than fp32 here; "
                                                  "use fp32"):
        precision_dtype("bf16", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        precision_dtype("bf16")              # no device: nothing to judge
        precision_dtype("fp32", "cpu")
        monkeypatch.setattr(nass.model.precision, "cpu_has_bf16_matmul", lambda: True)
        precision_dtype("bf16", "cpu")
    monkeypatch.setattr(nass.model.precision, "cpu_has_bf16_matmul", lambda: False)
    torch.manual_seed(0)
    model = load_model(HPARAMS, TINY)
    Checkpointer(tmp_path / "save", {"encoder": model.encoder, "masknet": model.masknet,
                                     "decoder": model.decoder}).save_checkpoint(meta={"si-snr": 0.0})
    sf.write(tmp_path / "talk.wav", real_mixture().numpy()[:8000], 8000)
    status = main(["separate", "--hparams", str(HPARAMS), "--checkpoint", str(tmp_path / "save"),
                   "--precision", "bf16", str(tmp_path / "talk.wav")]
                  + [arg for k, v in TINY.items() for arg in (f"--{k}", str(v))])
    assert status == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "bf16 runs" in line]
    assert warned == ["nass separate: warning: precision bf16: this CPU has no bf16 matrix "
                      "kernels (AVX-512 or AMX), so bf16 runs many times slower than fp32 "
                      "here; use fp32"]


def test_tf32_on_a_cpu_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="precision tf32 needs a CUDA device"):
        Separator(load_model(HPARAMS, TINY), 8000, precision="tf32")
    sf.write(tmp_path / "talk.wav", real_mixture().numpy(), 8000)
    status = main(["separate", "--hparams", str(HPARAMS), "--checkpoint", str(tmp_path / "save"),
                   "--precision", "tf32", str(tmp_path / "talk.wav")]
                  + [arg for k, v in TINY.items() for arg in (f"--{k}", str(v))])
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "nass separate: error: --precision tf32: precision tf32 needs a CUDA device (device is "
        "cpu); use fp32"]


def test_tf32_runs_only_when_asked_for_on_cuda(tf32_flags):
    # Flags only: setting them needs no GPU; tests/test_gpu.py measures what they do on one.
    for precision, on in (("fp32", False), ("tf32", True), ("bf16", False), ("fp16", False)):
        set_tf32(precision, "cuda:0")
        assert [flag.allow_tf32 for flag in tf32_flags] == [on, on], precision
    set_tf32("tf32", "cuda")
    set_tf32("fp32", "cpu")   # a CPU run leaves CUDA's flags alone
    assert [flag.allow_tf32 for flag in tf32_flags] == [True, True]
