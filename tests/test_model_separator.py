"""The noise-aware separator: shapes, state-dict compatibility, representations, errors."""

import pytest
import torch
from speechbrain.lobes.models.dual_path import (
    Decoder,
    Dual_Path_Model,
    Encoder,
    SBRNNBlock,
    SBTransformerBlock,
)

from nass.model import NoiseAwareSeparator, Outputs


def tiny(num_spks=2, noise_output=True, backbone="sepformer", n=16):
    def block():
        if backbone == "sepformer":
            return SBTransformerBlock(num_layers=1, d_model=n, nhead=2, d_ffn=32, dropout=0,
                                      use_positional_encoding=True, norm_before=True)
        return SBRNNBlock(input_size=n, hidden_channels=8, num_layers=1, bidirectional=True)

    masknet = Dual_Path_Model(n, n, block(), block(), num_layers=1, K=20, norm="ln",
                              num_spks=num_spks + int(noise_output),
                              skip_around_intra=True, linear_layer_after_inter_intra=False)
    return NoiseAwareSeparator(
        Encoder(kernel_size=16, out_channels=n), masknet,
        Decoder(in_channels=n, out_channels=1, kernel_size=16, stride=8, bias=False),
        Outputs(num_spks, noise_output),
    )


@pytest.mark.parametrize("backbone", ["sepformer", "dprnn"])
@pytest.mark.parametrize("num_spks,noise_output", [(2, True), (3, True), (2, False)])
def test_outputs_have_input_length(backbone, num_spks, noise_output):
    torch.manual_seed(0)
    model = tiny(num_spks, noise_output, backbone)
    for length in (16, 801, 1003):
        est = model(torch.randn(2, length))
        assert est.shape == (2, length, num_spks + int(noise_output))
    assert model(torch.randn(1, 500)).shape == (1, 500, num_spks + int(noise_output))


def test_state_dict_keys_are_speechbrains():
    torch.manual_seed(0)
    model = tiny(2, True)
    def block():
        return SBTransformerBlock(num_layers=1, d_model=16, nhead=2, d_ffn=32, dropout=0,
                                  use_positional_encoding=True, norm_before=True)

    plain = Dual_Path_Model(16, 16, block(), block(), num_layers=1, K=20, norm="ln", num_spks=3,
                            skip_around_intra=True, linear_layer_after_inter_intra=False)
    ours, theirs = model.masknet.state_dict(), plain.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    model.masknet.load_state_dict(theirs, strict=True)
    assert set(model.encoder.state_dict()) == {"conv1d.weight"}
    assert set(model.decoder.state_dict()) == {"weight"}


def test_reps_are_decoder_inputs_and_decode_to_the_outputs():
    torch.manual_seed(1)
    model = tiny(2, True).eval()
    mix = torch.randn(2, 640)
    est, reps = model(mix, return_reps=True)
    w = model.encoder(mix)
    assert reps.shape == (3, 2, *w.shape[1:])
    torch.testing.assert_close(reps, w.unsqueeze(0) * model.masknet(w))
    for o in range(3):
        torch.testing.assert_close(est[..., o], model.decoder(reps[o])[:, :640])


def test_encode_batches_several_signals():
    torch.manual_seed(2)
    model = tiny(2, True)
    sig = torch.randn(2, 400, 3)
    reps = model.encode(sig)
    for s in range(3):
        torch.testing.assert_close(reps[s], model.encoder(sig[..., s]))


def test_short_input_and_wrong_masknet_are_refused():
    model = tiny(2, True)
    with pytest.raises(ValueError, match=r"input of 15 samples is shorter than the encoder kernel \(16"):
        model(torch.randn(1, 15))
    with pytest.raises(ValueError, match="masknet makes 3 masks but num_spks=3 with noise_output=True needs 4"):
        NoiseAwareSeparator(model.encoder, model.masknet, model.decoder, Outputs(3))


def test_separate_accepts_one_signal():
    est = tiny(2, True).separate(torch.randn(320))
    assert est.shape == (320, 3) and not est.requires_grad
