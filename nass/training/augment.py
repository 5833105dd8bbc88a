"""Training-time augmentation of the NASS recipes.

Speed perturbation changes each speaker on its own (the noise is left as it
is, as in the reference), then the mixture is re-summed from the perturbed
speakers and the noise, and a random crop keeps ``training_signal_len``
samples.

Example
-------
>>> import torch
>>> sources = torch.randn(2, 8000, 3)          # two speakers, then the noise
>>> mix, sources, lengths = remix_with_speed_perturb(
...     sources, torch.tensor([8000, 8000]), num_perturbed=2, speeds=(95, 105))
>>> mix.shape[0], sources.shape[-1]
(2, 3)
>>> bool(torch.allclose(mix, sources.sum(-1)))
True
"""

import torch
import torchaudio.functional as AF


def speed_perturb(signal, speed):
    """Resamples ``[B, T]`` so it plays at ``speed`` percent (100 = unchanged).

    As ``speechbrain.augment.time_domain.SpeedPerturb`` (ratio ``speed / 100``),
    but on the signal's own device: SpeechBrain's resamplers run on a device
    fixed at construction (the CPU by default, a round trip per step on a
    GPU) and draw the speed from the global generator inside.
    """
    if speed == 100:
        return signal
    return AF.resample(signal, orig_freq=int(speed), new_freq=100)


def remix_with_speed_perturb(sources, lengths, num_perturbed, speeds=(95, 100, 105), generator=None):
    """Perturbs each of the first ``num_perturbed`` sources at a random speed and re-sums the mixture.

    The speed of each perturbed source is one ``torch.randint`` draw, in
    source order, as SpeechBrain's recipes draw it.

    Arguments
    ---------
    sources : torch.Tensor
        ``[B, T, S]``: the speakers, then (if any) the noise, which is left as it is.
    lengths : torch.LongTensor
        Valid samples per utterance ``[B]``.
    num_perturbed : int
        How many leading sources (the speakers) are perturbed.
    speeds : sequence of int
        Percentages to draw from.
    generator : torch.Generator, optional

    Returns
    -------
    mix : torch.Tensor
        ``[B, T']`` with ``mix = sources.sum(-1)``.
    sources : torch.Tensor
        ``[B, T', S]``, cut to the shortest perturbed source.
    lengths : torch.LongTensor
        The valid samples after perturbation.
    """
    length = sources.shape[1]
    out, new_lengths = [], []
    for k in range(sources.shape[-1]):
        if k < num_perturbed:
            speed = speeds[int(torch.randint(len(speeds), (1,), generator=generator))]
            perturbed = speed_perturb(sources[..., k], speed)
            new_lengths.append(torch.div(lengths * perturbed.shape[1], length, rounding_mode="floor"))
        else:
            perturbed = sources[..., k]
            new_lengths.append(lengths)
        out.append(perturbed)
    shortest = min(s.shape[1] for s in out)
    sources = torch.stack([s[:, :shortest] for s in out], dim=-1)
    lengths = torch.stack(new_lengths).min(dim=0).values.clamp(max=shortest)
    return sources.sum(-1), sources, lengths


def random_crop(mix, sources, lengths, crop_len, generator=None):
    """Cuts the same random ``crop_len`` window from every utterance of the batch.

    The window lies inside the shortest utterance so that no crop is padding;
    batches shorter than ``crop_len`` are returned unchanged. The start is one
    ``torch.randint`` draw even then, as in SpeechBrain's recipes, so both
    consume the same random numbers.
    """
    shortest = int(lengths.min())
    start = int(torch.randint(max(0, shortest - crop_len) + 1, (1,), generator=generator))
    if shortest <= crop_len:
        return mix, sources, lengths
    mix = mix[:, start : start + crop_len]
    sources = sources[:, start : start + crop_len]
    return mix, sources, torch.full_like(lengths, crop_len)
