"""The NASS training objective: SI-SNR with PIT plus the PCL term, per utterance.

The model's :class:`nass.model.Outputs` decides the PIT: ``pit`` (the reference)
permutes all C+1 outputs against ``[s_1..s_C, noise]``; ``fixed`` keeps the
last output for the noise and permutes the speakers. The objective holds no
trainable module: the Brain passes the patch sampler (DDP-wrapped under
``torchrun``, so its gradients are averaged) to each call.

Example
-------
>>> import torch
>>> objective = NASSObjective(Outputs(num_spks=2, noise_output=True), pcl_weight=0.0)
>>> targets = torch.randn(2, 400, 3)
>>> out = objective(targets[..., [2, 0, 1]], targets)
>>> out["assignment"].tolist()
[[1, 2, 0], [1, 2, 0]]
>>> bool(out["loss"].max() < -50)
True
"""

import torch

from nass.metrics import pairwise_si_snr
from nass.model.outputs import Outputs
from nass.losses.pcl import PatchNCELoss, chance_level, pcl_loss
from nass.losses.pit import align, best_assignment


class NASSObjective:
    """Separation loss (negative SI-SNR, PIT) and PCL loss, per utterance.

    Arguments
    ---------
    outputs : nass.model.outputs.Outputs
        C, the noise output and how it is assigned.
    pcl_weight : float
        lambda; 0 turns PCL off.
    pcl_num_patches : int
        K, patches per representation.
    pcl_temperature : float
        tau of the PatchNCE loss.
    """

    def __init__(self, outputs, pcl_weight=2.0, pcl_num_patches=256, pcl_temperature=0.07):
        if not isinstance(outputs, Outputs):
            raise TypeError(f"outputs must be a nass.model.outputs.Outputs, got {type(outputs).__name__}")
        if pcl_weight < 0:
            raise ValueError(f"pcl_weight must be >= 0, got {pcl_weight}")
        if pcl_weight > 0 and not outputs.noise_output:
            raise ValueError(
                "pcl_weight > 0 needs noise_output: True (PCL contrasts speakers with the "
                "noise output); set --pcl_weight 0 for the plain baseline"
            )
        self.outputs = outputs
        self.num_spks = outputs.num_spks
        self.pcl_weight = float(pcl_weight)
        self.pcl_num_patches = int(pcl_num_patches)
        self.nce = PatchNCELoss(pcl_temperature)

    @property
    def num_targets(self):
        """C + 1 with the noise output, C without."""
        return self.outputs.num_outputs

    @property
    def uses_pcl(self):
        """Whether the PCL term is computed."""
        return self.pcl_weight > 0

    def assign(self, estimates, targets, lengths=None):
        """PIT: ``(assignment [B, R], negative SI-SNR of the matched pairs [B])``.

        ``lengths`` (samples, ``[B]``) keeps padding out of the SI-SNR.
        """
        self._check(estimates, targets)
        return best_assignment(
            -pairwise_si_snr(estimates, targets, lengths=lengths), fixed_last=self.outputs.fixed_noise
        )

    def speakers(self, estimates, targets, lengths=None):
        """The C speaker estimates in target order ``[B, T, C]`` (noise output dropped)."""
        assignment, _ = self.assign(estimates, targets, lengths)
        return align(estimates, assignment)[..., : self.num_spks]

    def speaker_loss(self, estimates, targets, lengths=None):
        """Evaluation loss ``[B]``: negative SI-SNR of the speakers, PIT over C.

        The noise output is assigned as in training and dropped first, so the
        number is comparable between NASS models and plain baselines.
        """
        speakers = self.speakers(estimates, targets, lengths)
        refs = targets[..., : self.num_spks]
        return best_assignment(-pairwise_si_snr(speakers, refs, lengths=lengths))[1]

    def __call__(self, estimates, targets, sep_reps=None, clean_reps=None, lengths=None,
                 patch_sampler=None, valid_frames=None):
        """Per-utterance losses.

        Arguments
        ---------
        estimates : torch.Tensor
            ``[B, T, C(+1)]`` model outputs.
        targets : torch.Tensor
            ``[B, T, C(+1)]``: ``[s_1..s_C(, noise)]``.
        sep_reps : torch.Tensor
            Decoder inputs ``[C+1, B, N, L]``, needed for PCL.
        clean_reps : torch.Tensor
            ``Enc(s_k)`` ``[C, B, N, L]``, needed for PCL.
        lengths : torch.Tensor, optional
            Valid samples per utterance ``[B]``.
        patch_sampler : torch.nn.Module, optional
            The trained :class:`nass.losses.pcl.PatchSampler` or
            :class:`nass.losses.pcl.FramePatchSampler` (as the Brain holds it, DDP
            wrapper included), needed for PCL.
        valid_frames : int, optional
            Encoder frames that every utterance of the batch computes from its
            own samples (not padding): patches come from those, or from the
            sampler's fewest frames when the batch has fewer.

        Returns
        -------
        dict
            ``loss``, ``separation``, ``pcl`` (each ``[B]``),
            ``assignment`` ``[B, C(+1)]`` (output index for each target) and
            ``pcl_chance`` (float: the PCL term at chance, ``weight * ln K``;
            0 without PCL).
        """
        assignment, separation = self.assign(estimates, targets, lengths)
        if self.uses_pcl:
            if sep_reps is None or clean_reps is None or patch_sampler is None:
                raise ValueError(
                    "PCL is on (pcl_weight > 0): pass sep_reps, clean_reps and patch_sampler"
                )
            pcl, patches = pcl_loss(patch_sampler, self.nce, sep_reps, clean_reps, assignment,
                                    self.pcl_num_patches, self.pcl_weight,
                                    valid_frames=valid_frames)
            chance = chance_level(patches, self.pcl_weight)
        else:
            pcl, chance = torch.zeros_like(separation), 0.0
        return {
            "loss": separation + pcl,
            "separation": separation,
            "pcl": pcl,
            "assignment": assignment,
            "pcl_chance": chance,
        }

    def _check(self, estimates, targets):
        expected = self.num_targets
        if estimates.dim() != 3 or targets.dim() != 3:
            raise ValueError(
                f"estimates and targets must be [B, T, S]; got {tuple(estimates.shape)} and "
                f"{tuple(targets.shape)}"
            )
        if estimates.shape[-1] != expected or targets.shape[-1] != expected:
            raise ValueError(
                f"expected {expected} outputs and targets (num_spks={self.num_spks}, "
                f"noise_output={self.outputs.noise_output}); got estimates {tuple(estimates.shape)} "
                f"and targets {tuple(targets.shape)}"
            )
        if estimates.shape[:2] != targets.shape[:2]:
            raise ValueError(
                f"estimates {tuple(estimates.shape)} and targets {tuple(targets.shape)} differ "
                f"in batch or length"
            )


