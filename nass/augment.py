"""Training-time augmentation of the NASS recipes.

Speed perturbation changes each speaker on its own (the noise is left as it
is, as in the reference), then the mixture is re-summed from the perturbed
speakers and the noise, and a random crop keeps ``training_signal_len``
samples.

Example
-------
>>> import torch
>>> speakers, noise = torch.randn(2, 8000, 2), torch.randn(2, 8000)
>>> mix, targets, lengths = remix_with_speed_perturb(
...     speakers, noise, torch.tensor([8000, 8000]), speeds=(95, 105))
>>> mix.shape[0], targets.shape[-1]
(2, 3)
>>> bool(torch.allclose(mix, targets.sum(-1)))
True
"""

import torch
import torchaudio.functional as AF


def speed_perturb(signal, speed):
    """Resamples ``[B, T]`` so it plays at ``speed`` percent (100 = unchanged)."""
    if speed == 100:
        return signal
    return AF.resample(signal, orig_freq=int(speed), new_freq=100)


def remix_with_speed_perturb(speakers, noise, lengths, speeds=(95, 100, 105), generator=None):
    """Perturbs each speaker at a random speed and re-sums the mixture.

    Arguments
    ---------
    speakers : torch.Tensor
        ``[B, T, C]`` clean speakers.
    noise : torch.Tensor or None
        ``[B, T]`` noise (None for clean mixtures).
    lengths : torch.LongTensor
        Valid samples per utterance ``[B]``.
    speeds : sequence of int
        Percentages to draw from.
    generator : torch.Generator, optional

    Returns
    -------
    mix : torch.Tensor
        ``[B, T']`` with ``mix = sum(speakers) + noise``.
    targets : torch.Tensor
        ``[B, T', C(+1)]`` perturbed speakers, then the noise.
    lengths : torch.LongTensor
        The valid samples after perturbation.
    """
    length = speakers.shape[1]
    sources, new_lengths = [], []
    for k in range(speakers.shape[-1]):
        speed = speeds[int(torch.randint(len(speeds), (1,), generator=generator))]
        out = speed_perturb(speakers[..., k], speed)
        sources.append(out)
        new_lengths.append(torch.div(lengths * out.shape[1], length, rounding_mode="floor"))
    if noise is not None:
        sources.append(noise)
        new_lengths.append(lengths)
    shortest = min(s.shape[1] for s in sources)
    targets = torch.stack([s[:, :shortest] for s in sources], dim=-1)
    lengths = torch.stack(new_lengths).min(dim=0).values.clamp(max=shortest)
    return targets.sum(-1), targets, lengths


def random_crop(mix, targets, lengths, crop_len, generator=None):
    """Cuts the same random ``crop_len`` window from every utterance of the batch.

    The window lies inside the shortest utterance so that no crop is padding;
    batches shorter than ``crop_len`` are returned unchanged.
    """
    shortest = int(lengths.min())
    if shortest <= crop_len:
        return mix, targets, lengths
    start = int(torch.randint(shortest - crop_len + 1, (1,), generator=generator))
    mix = mix[:, start : start + crop_len]
    targets = targets[:, start : start + crop_len]
    return mix, targets, torch.full_like(lengths, crop_len)
