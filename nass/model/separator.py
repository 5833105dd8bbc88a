"""The noise-aware separator: encoder, mask network with C(+1) masks, decoder.

The three parts are SpeechBrain's own modules (``dual_path.Encoder``,
``dual_path.Dual_Path_Model``, ``dual_path.Decoder``), held under the names
``encoder``, ``masknet`` and ``decoder`` so their state dicts are those of the
release checkpoints (``encoder.ckpt``, ``masknet.ckpt``, ``decoder.ckpt``).
The noise output is just one more mask: ``Dual_Path_Model(num_spks=C + 1)``.
SpeechBrain's attention modules in the mask network are computed by PyTorch's
fused kernel (:mod:`nass.model.attention`): same parameters and names, same outputs
to float rounding, faster; ``fused_attention=False`` keeps them as shipped.
What the outputs are is the model's :class:`nass.model.outputs.Outputs`.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.dual_path import Decoder, Dual_Path_Model, Encoder, SBRNNBlock
>>> enc = Encoder(kernel_size=16, out_channels=16)
>>> intra = SBRNNBlock(input_size=16, hidden_channels=8, num_layers=1, bidirectional=True)
>>> inter = SBRNNBlock(input_size=16, hidden_channels=8, num_layers=1, bidirectional=True)
>>> mask = Dual_Path_Model(16, 16, intra, inter, num_layers=1, K=20, num_spks=3)
>>> dec = Decoder(in_channels=16, out_channels=1, kernel_size=16, stride=8, bias=False)
>>> model = NoiseAwareSeparator(enc, mask, dec, Outputs(num_spks=2, noise_output=True))
>>> model(torch.randn(2, 800)).shape
torch.Size([2, 800, 3])
"""

import torch
import torch.nn.functional as F
from torch import nn

from nass.model.attention import use_fused_attention
from nass.model.outputs import Outputs


class NoiseAwareSeparator(nn.Module):
    """Mask-based separator with C speaker outputs and, optionally, one noise output.

    Arguments
    ---------
    encoder : speechbrain.lobes.models.dual_path.Encoder
    masknet : speechbrain.lobes.models.dual_path.Dual_Path_Model
        Built with ``num_spks = outputs.num_outputs`` (C + 1 with the noise output).
    decoder : speechbrain.lobes.models.dual_path.Decoder
    outputs : nass.model.outputs.Outputs
        The speakers, whether there is a noise output (NASS) or not
        (baseline), and how the noise output is assigned.
    fused_attention : bool
        Swap SpeechBrain's attention modules in ``masknet`` (in place) for
        :class:`nass.model.attention.FusedMultiheadAttention`, which shares their
        parameters; False keeps SpeechBrain's explicit attention.
    """

    def __init__(self, encoder, masknet, decoder, outputs, fused_attention=True):
        super().__init__()
        if not isinstance(outputs, Outputs):
            raise TypeError(f"NoiseAwareSeparator: outputs must be a nass.model.outputs.Outputs, "
                            f"got {type(outputs).__name__}")
        self.encoder = encoder
        self.masknet = use_fused_attention(masknet) if fused_attention else masknet
        self.decoder = decoder
        self.outputs = outputs
        masks = getattr(masknet, "num_spks", None)
        if masks is not None and masks != outputs.num_outputs:
            raise ValueError(
                f"NoiseAwareSeparator: masknet makes {masks} masks but num_spks="
                f"{outputs.num_spks} with noise_output={outputs.noise_output} needs "
                f"{outputs.num_outputs}; build the Dual_Path_Model with num_spks="
                f"{outputs.num_outputs}"
            )

    @property
    def num_spks(self):
        """C, the number of speakers."""
        return self.outputs.num_spks

    @property
    def noise_output(self):
        """Whether one output is the noise."""
        return self.outputs.noise_output

    @property
    def num_outputs(self):
        """C + 1 with the noise output, C without."""
        return self.outputs.num_outputs

    @property
    def kernel_size(self):
        """The encoder's kernel: the shortest input the model accepts."""
        return self.encoder.conv1d.kernel_size[0]

    def valid_frames(self, n_samples):
        """Encoder frames computed from the first ``n_samples`` samples only (not from padding)."""
        conv = self.encoder.conv1d
        return max(0, (n_samples - conv.kernel_size[0]) // conv.stride[0] + 1)

    def encode(self, signals):
        """Encodes ``[B, T]`` signals (or ``[B, T, S]``, giving ``[S, B, N, L]``)."""
        if signals.dim() == 2:
            return self.encoder(signals)
        batch, length, n_sig = signals.shape
        flat = signals.permute(2, 0, 1).reshape(n_sig * batch, length)
        reps = self.encoder(flat)
        return reps.reshape(n_sig, batch, *reps.shape[1:])

    def forward(self, mix, return_reps=False):
        """Separates ``mix`` ``[B, T]`` into ``[B, T, C(+1)]`` waveforms.

        With ``return_reps`` it also returns the decoder inputs
        ``h_o = Enc(mix) * m_o`` as ``[C(+1), B, N, L]`` (what PCL compares).
        """
        if mix.dim() != 2:
            raise ValueError(f"NoiseAwareSeparator: mix must be [B, T], got {tuple(mix.shape)}")
        length = mix.shape[1]
        if length < self.kernel_size:
            raise ValueError(
                f"NoiseAwareSeparator: input of {length} samples is shorter than the "
                f"encoder kernel ({self.kernel_size} samples)"
            )
        mix_w = self.encoder(mix)
        masks = self.masknet(mix_w)
        sep_h = mix_w.unsqueeze(0) * masks
        n_out, batch = sep_h.shape[:2]
        # One decoder pass for all outputs; reshape guards against its squeeze().
        decoded = self.decoder(sep_h.reshape(n_out * batch, *sep_h.shape[2:]))
        est = decoded.reshape(n_out, batch, -1).permute(1, 2, 0)
        # The decoder gives at most one stride less than the input: pad by a
        # stride, then cut. One path for every length, so an exported graph
        # (ONNX, torch.export) is right for lengths it was not traced with.
        est = F.pad(est, (0, 0, 0, self.decoder.stride[0]))[:, :length]
        if return_reps:
            return est, sep_h
        return est

    @torch.no_grad()
    def separate(self, mix):
        """Inference helper: ``[B, T]`` or ``[T]`` in, ``[B, T, C(+1)]`` out, no grad."""
        squeeze = mix.dim() == 1
        est = self.forward(mix.unsqueeze(0) if squeeze else mix)
        return est[0] if squeeze else est
