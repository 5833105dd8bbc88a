"""Patch-wise contrastive learning (PCL), the second half of NASS (Zhang et al., ICASSP 2024, 2.3).

Each separated speaker's encoder-domain representation is pulled towards the
clean speaker's and pushed from the output assigned to the noise, patch by
patch. A patch sampler embeds ``[B, N, L]`` representations at K shared
positions: :class:`PatchSampler` (``pcl_patch: scalar``, the reference's: a
patch is one scalar of a 3x3-conv map; release checkpoints load into it) or
:class:`FramePatchSampler` (``pcl_patch: frame``: a patch is an encoder frame).
:class:`PatchNCELoss` is the per-patch InfoNCE; :func:`pcl_loss` the term per
utterance, aligned by each utterance's own PIT assignment. :func:`chance_level`
is the term when all logits are equal (``weight * ln K``), which the reference's
scalar patches do not leave (the train log's ``pcl_vs_chance``). About 430
lines: two samplers and the loss belong together (one convention of positions).

Example
-------
>>> import torch
>>> sampler, nce = PatchSampler(proj_dim=8), PatchNCELoss()
>>> est = torch.randn(3, 2, 16, 40)        # C + 1 = 3 estimates, batch 2
>>> clean = torch.randn(2, 2, 16, 40)      # Enc(s_1), Enc(s_2)
>>> assignment = torch.tensor([[0, 1, 2], [2, 0, 1]])
>>> loss, patches = pcl_loss(sampler, nce, est, clean, assignment, num_patches=32, weight=2.0)
>>> loss.shape, patches
(torch.Size([2]), 32)
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

PATCH_KINDS = ("scalar", "frame")

# The two 3x3 convolutions make every output position depend on a 5x5 window.
PATCH_WINDOW = 5
_SHRINK = PATCH_WINDOW - 1
# The reference normalises with ``x / (||x|| + 1e-7)``; keep it for equal losses.
_NORM_EPS = 1e-7
# Logit given to a query's dot product with the negative at its own position.
_SAME_POSITION_LOGIT = -10.0


class _Sampler(nn.Module):
    """What both samplers share: drawing K positions and checking the representations."""

    # The fewest frames a representation must have.
    min_frames = 1

    def num_positions(self, n_channels, n_frames):
        """Number of patches a ``[B, n_channels, n_frames]`` rep offers."""
        raise NotImplementedError

    def _check_shape(self, shape, name):
        """``(n_channels, n_frames)`` of a rep ``shape``, or ValueError saying what is expected."""
        raise NotImplementedError

    def draw_patch_ids(self, shape, num_patches, device=None):
        """Draws ``min(num_patches, positions)`` distinct positions for reps of ``shape``.

        Asking for more patches than there are positions takes all of them
        (as the reference does), in random order.
        """
        n_channels, n_frames = self._check_shape(shape, "reps")
        if num_patches < 1:
            raise ValueError(f"{type(self).__name__}: num_patches must be >= 1, got {num_patches}")
        positions = self.num_positions(n_channels, n_frames)
        return torch.randperm(positions, device=device)[: min(num_patches, positions)]

    def _checked_reps(self, reps, num_patches, patch_ids, valid_frames=None):
        """``(reps, shape, patch_ids)``: the representations checked alike, and the K positions.

        ``valid_frames`` (frames computed from samples rather than padding)
        cuts the reps to that many frames, or to the fewest the sampler takes.
        """
        name = type(self).__name__
        reps = list(reps)
        if valid_frames is not None and reps:
            frames = max(self.min_frames, int(valid_frames))
            reps = [rep[..., :frames] for rep in reps]
        if not reps:
            raise ValueError(f"{name}: reps is empty; expected at least one [B, N, L] tensor")
        shape = reps[0].shape
        for i, rep in enumerate(reps):
            if rep.shape != shape:
                raise ValueError(f"{name}: reps[{i}] has shape {tuple(rep.shape)}, expected "
                                 f"{tuple(shape)} like reps[0]")
        n_channels, n_frames = self._check_shape(shape, "reps[0]")
        device = reps[0].device
        if patch_ids is None:
            return reps, shape, self.draw_patch_ids(shape, num_patches, device=device)
        patch_ids = torch.as_tensor(patch_ids)
        positions = self.num_positions(n_channels, n_frames)
        if patch_ids.dim() != 1 or patch_ids.numel() == 0 or patch_ids.dtype.is_floating_point:
            raise ValueError(f"{name}: patch_ids must be a non-empty 1-D integer tensor, got "
                             f"{patch_ids.dtype} of shape {tuple(patch_ids.shape)}")
        if patch_ids.min() < 0 or patch_ids.max() >= positions:
            raise ValueError(f"{name}: patch_ids must lie in [0, {positions}) for reps of shape "
                             f"{tuple(shape)}; got range [{int(patch_ids.min())}, "
                             f"{int(patch_ids.max())}]")
        return reps, shape, patch_ids.long().to(device)


class PatchSampler(_Sampler):
    """Samples patch embeddings from encoder-domain representations.

    Each representation ``[B, N, L]`` is read as a one-channel image
    ``[B, 1, N, L]``; ``Conv2d(1,1,3) -> ReLU -> Conv2d(1,1,3)`` maps it to
    ``[B, 1, N-4, L-4]``; K positions ``row * (L-4) + col`` are picked; each
    picked scalar goes through ``Linear(1, D) -> ReLU -> Linear(D, D)`` and is
    L2-normalised. The state dict keys (``conv.0/2``, ``mlp.0/2``) are those of
    the reference release's ``patchsamplenet.ckpt``.

    Only the 5x5 windows under the picked positions are convolved, which gives
    the full convolution's values at a fraction of its cost.

    Arguments
    ---------
    proj_dim : int
        D, the embedding size (256 in the release).

    Example
    -------
    >>> sampler = PatchSampler(proj_dim=4)
    >>> feats, ids = sampler([torch.randn(2, 8, 10), torch.randn(2, 8, 10)], num_patches=5)
    >>> [tuple(f.shape) for f in feats], tuple(ids.shape)
    ([(2, 5, 4), (2, 5, 4)], (5,))
    """

    def __init__(self, proj_dim=256):
        super().__init__()
        if proj_dim < 1:
            raise ValueError(f"PatchSampler: proj_dim must be >= 1, got {proj_dim}")
        self.proj_dim = proj_dim
        self.conv = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3))
        self.mlp = nn.Sequential(nn.Linear(1, proj_dim), nn.ReLU(), nn.Linear(proj_dim, proj_dim))

    min_frames = PATCH_WINDOW

    def num_positions(self, n_channels, n_frames):
        """Number of positions a ``[B, n_channels, n_frames]`` rep offers."""
        return (n_channels - _SHRINK) * (n_frames - _SHRINK)

    def forward(self, reps, num_patches, patch_ids=None, valid_frames=None):
        """Embeds the same K positions of every representation.

        Arguments
        ---------
        reps : sequence of torch.Tensor
            Representations, each ``[B, N, L]``, all of one shape.
        num_patches : int
            K, used when ``patch_ids`` is None.
        patch_ids : torch.LongTensor, optional
            1-D flattened positions in the ``[N-4, L-4]`` conv output.
        valid_frames : int, optional
            Use only the first frames (see :meth:`_Sampler._checked_reps`).

        Returns
        -------
        features : list of torch.Tensor
            One ``[B, K, D]`` L2-normalised tensor per rep.
        patch_ids : torch.LongTensor
            The K positions used.
        """
        reps, shape, patch_ids = self._checked_reps(reps, num_patches, patch_ids, valid_frames)
        batch, n_channels, n_frames = shape
        stacked = torch.stack(reps).reshape(len(reps) * batch, n_channels * n_frames)
        windows = stacked[:, self._window_index(patch_ids, n_frames)]
        windows = windows.reshape(-1, 1, PATCH_WINDOW, PATCH_WINDOW)
        picked = self.conv(windows.to(self.conv[0].weight.dtype)).reshape(-1, 1)
        emb = self.mlp(picked).float()
        emb = emb / (emb.norm(p=2, dim=1, keepdim=True) + _NORM_EPS)
        emb = emb.reshape(len(reps), batch, len(patch_ids), self.proj_dim)
        return list(emb.unbind(0)), patch_ids

    @staticmethod
    def _window_index(patch_ids, n_frames):
        """Flat indices ``[K * 25]`` of the 5x5 input window under each position."""
        width = n_frames - _SHRINK
        rows, cols = patch_ids // width, patch_ids % width
        offsets = torch.arange(PATCH_WINDOW, device=patch_ids.device)
        idx = (rows[:, None, None] + offsets[None, :, None]) * n_frames
        idx = idx + cols[:, None, None] + offsets[None, None, :]
        return idx.reshape(-1)

    def _check_shape(self, shape, name):
        if len(shape) != 3:
            raise ValueError(
                f"PatchSampler: {name} must be [B, N, L], got shape {tuple(shape)}"
            )
        _, n_channels, n_frames = shape
        if n_channels < PATCH_WINDOW or n_frames < PATCH_WINDOW:
            raise ValueError(
                f"PatchSampler: {name} has shape {tuple(shape)}; the two 3x3 convolutions "
                f"need N >= {PATCH_WINDOW} and L >= {PATCH_WINDOW}"
            )
        return n_channels, n_frames

class FramePatchSampler(_Sampler):
    """Patches that are frames: all N channels at one time step (or ``window`` steps).

    CUT's PatchNCE (Park et al., arXiv 2007.15651), from which the
    reference's sampler was adapted, embeds the feature *vector* at a spatial
    position; here the position is a frame of the encoder domain. Each
    representation ``[B, N, L]`` is

    1. (only with ``centre``) centred over time: its per-channel mean over
       the L frames removed;
    2. cut into the K chosen frames (``window`` consecutive frames each,
       flattened to ``N * window`` values), each L2-normalised: encoder
       frames are small and all non-negative (ReLU encoder), and an MLP with
       biases maps raw frames to nearly one point; unit-norm frames keep
       their direction (which channels are active) and lose their loudness;
    3. embedded by ``Linear(N * window, D) -> ReLU -> Linear(D, D)`` and
       L2-normalised.

    Measured on tiny recipe runs (72 steps, see the LibriMix recipe README,
    "Does PCL learn?"): normalised frames leave chance within tens of steps;
    centring over time first leaves it more slowly (it removes what the
    speaker's frames share, the part that tells them from the noise's).

    Positions are window starts ``0 .. L - window``; the state dict has
    ``mlp.0/2`` only (release checkpoints hold the scalar sampler's keys).

    Arguments
    ---------
    num_channels : int
        N, the encoder's channels.
    proj_dim : int
        D, the embedding size.
    window : int
        Frames per patch.
    centre : bool
        Remove each representation's mean over time first (step 1; off by
        default, it learned more slowly).

    Example
    -------
    >>> sampler = FramePatchSampler(num_channels=8, proj_dim=4, window=2)
    >>> feats, ids = sampler([torch.rand(2, 8, 10), torch.rand(2, 8, 10)], num_patches=5)
    >>> [tuple(f.shape) for f in feats], tuple(ids.shape), sampler.num_positions(8, 10)
    ([(2, 5, 4), (2, 5, 4)], (5,), 9)
    """

    def __init__(self, num_channels, proj_dim=256, window=1, centre=False):
        super().__init__()
        for name, value in (("num_channels", num_channels), ("proj_dim", proj_dim),
                            ("window", window)):
            if int(value) < 1:
                raise ValueError(f"FramePatchSampler: {name} must be >= 1, got {value}")
        self.num_channels, self.proj_dim = int(num_channels), int(proj_dim)
        self.window, self.centre = int(window), bool(centre)
        self.min_frames = self.window
        self.mlp = nn.Sequential(
            nn.Linear(self.num_channels * self.window, self.proj_dim), nn.ReLU(),
            nn.Linear(self.proj_dim, self.proj_dim),
        )

    def num_positions(self, n_channels, n_frames):
        """Number of patches a ``[B, n_channels, n_frames]`` rep offers."""
        return n_frames - self.window + 1

    def forward(self, reps, num_patches, patch_ids=None, valid_frames=None):
        """Embeds the same K frames (windows) of every representation.

        Arguments and returns as :meth:`PatchSampler.forward`; ``patch_ids``
        are window starts in ``[0, L - window]``.
        """
        reps, _, patch_ids = self._checked_reps(reps, num_patches, patch_ids, valid_frames)
        device = reps[0].device
        stacked = torch.stack(reps).float()                      # [R, B, N, L]
        if self.centre:
            stacked = stacked - stacked.mean(dim=-1, keepdim=True)
        frames = patch_ids[:, None] + torch.arange(self.window, device=device)
        picked = stacked[..., frames]                            # [R, B, N, K, W]
        picked = picked.permute(0, 1, 3, 2, 4).flatten(3)        # [R, B, K, N * W]
        picked = picked / (picked.norm(p=2, dim=-1, keepdim=True) + _NORM_EPS)
        emb = self.mlp(picked.to(self.mlp[0].weight.dtype)).float()
        emb = emb / (emb.norm(p=2, dim=-1, keepdim=True) + _NORM_EPS)
        return list(emb.unbind(0)), patch_ids

    def _check_shape(self, shape, name):
        if len(shape) != 3:
            raise ValueError(
                f"FramePatchSampler: {name} must be [B, N, L], got shape {tuple(shape)}"
            )
        _, n_channels, n_frames = shape
        if n_channels != self.num_channels or n_frames < self.window:
            raise ValueError(
                f"FramePatchSampler: {name} has shape {tuple(shape)}; expected "
                f"N = {self.num_channels} channels and L >= window = {self.window} frames"
            )
        return n_channels, n_frames


def chance_level(num_patches, weight):
    """The PCL term when all logits are equal: ``weight * ln K``, K the patches used.

    Each patch's softmax runs over its positive and the K - 1 negatives at
    other positions (the one at its own position is masked).

    >>> round(chance_level(256, 2.0), 2)
    11.09
    """
    return float(weight) * math.log(max(int(num_patches), 1))


class PatchNCELoss(nn.Module):
    """Per-patch InfoNCE: query patches against one positive and the negatives.

    For patch i of utterance b the logits are ``[q_i . p_i, q_i . n_j for j]``
    with ``q_i . n_i`` set to -10, divided by the temperature; the loss is the
    cross-entropy against class 0. Negatives come from the same utterance only.
    ``positive`` and ``negatives`` are detached: only the query gets gradients.

    Arguments
    ---------
    temperature : float
        tau (0.07 in the release).

    Example
    -------
    >>> q = F.normalize(torch.randn(2, 6, 4), dim=-1)
    >>> PatchNCELoss()(q, q, -q).shape
    torch.Size([2, 6])
    """

    def __init__(self, temperature=0.07):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"PatchNCELoss: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, query, positive, negatives):
        """Returns the per-patch loss ``[B, K]`` for ``[B, K, D]`` inputs."""
        for name, t in (("positive", positive), ("negatives", negatives)):
            if t.shape != query.shape:
                raise ValueError(
                    f"PatchNCELoss: {name} has shape {tuple(t.shape)}, expected "
                    f"{tuple(query.shape)} like query"
                )
        if query.dim() != 3:
            raise ValueError(f"PatchNCELoss: query must be [B, K, D], got {tuple(query.shape)}")
        query = query.float()
        positive = positive.detach().float()
        negatives = negatives.detach().float()
        batch, k, _ = query.shape
        l_pos = (query * positive).sum(-1, keepdim=True)
        l_neg = torch.bmm(query, negatives.transpose(1, 2))
        same = torch.eye(k, dtype=torch.bool, device=query.device)
        l_neg = l_neg.masked_fill(same, _SAME_POSITION_LOGIT)
        logits = torch.cat([l_pos, l_neg], dim=-1) / self.temperature
        target = torch.zeros(batch * k, dtype=torch.long, device=query.device)
        return F.cross_entropy(logits.reshape(batch * k, k + 1), target, reduction="none").reshape(
            batch, k
        )


def pcl_loss(sampler, nce, estimates, clean, assignment, num_patches, weight, patch_ids=None,
             valid_frames=None):
    """The PCL term per utterance: ``weight / C * sum_k mean_i PatchNCE_i``.

    Arguments
    ---------
    sampler : PatchSampler or FramePatchSampler
    nce : PatchNCELoss
    estimates : torch.Tensor
        Decoder inputs ``h_o = w * m_o``, ``[C+1, B, N, L]`` (speakers and noise,
        in the model's output order).
    clean : torch.Tensor
        Encoded clean speakers ``Enc(s_k)``, ``[C, B, N, L]`` (target order).
    assignment : torch.LongTensor
        ``[B, C+1]``: for each utterance, the output index assigned to each
        target ``[s_1..s_C, noise]`` by the separation PIT.
    num_patches : int
        K.
    weight : float
        lambda.
    patch_ids : torch.LongTensor, optional
        Positions to use instead of drawing K new ones.
    valid_frames : int, optional
        Frames every utterance computes from its own samples: patches come
        from those (or from the sampler's fewest frames), not from padding.

    Returns
    -------
    loss : torch.Tensor
        ``[B]`` per utterance.
    patches : int
        K, the patches used (fewer than ``num_patches`` on short representations).
    """
    n_out, batch = estimates.shape[:2]
    n_spk = clean.shape[0]
    if n_out != n_spk + 1:
        raise ValueError(
            f"pcl_loss: estimates has {n_out} outputs and clean {n_spk} speakers; "
            f"expected C + 1 = {n_spk + 1} outputs (C speakers + noise)"
        )
    if tuple(assignment.shape) != (batch, n_out):
        raise ValueError(
            f"pcl_loss: assignment has shape {tuple(assignment.shape)}, expected "
            f"({batch}, {n_out}) = [B, C+1]"
        )
    if clean.shape[1:] != estimates.shape[1:]:
        raise ValueError(
            f"pcl_loss: clean reps are {tuple(clean.shape[1:])} per speaker, estimates "
            f"{tuple(estimates.shape[1:])}; expected the same [B, N, L]"
        )
    # Reorder outputs into target order, utterance by utterance.
    aligned = estimates.transpose(0, 1)[torch.arange(batch, device=assignment.device)[:, None], assignment]
    aligned = aligned.transpose(0, 1)
    # One sampler call and one PatchNCE call for all speakers: a few large
    # launches instead of many small ones (the step is launch-bound on a GPU).
    # Positives and negatives are detached in the loss, so only the queries'
    # embeddings get gradients, as if they had been sampled apart.
    features, patch_ids = sampler([*aligned[:n_spk], *clean, aligned[n_spk]], num_patches,
                                  patch_ids, valid_frames)
    queries = torch.cat(features[:n_spk])                                # [C * B, K, D]
    positives = torch.cat(features[n_spk:2 * n_spk])
    negatives = features[-1].repeat(n_spk, 1, 1)
    per_patch = nce(queries, positives, negatives)                       # [C * B, K]
    total = per_patch.mean(dim=1).reshape(n_spk, batch).sum(dim=0)
    return total * (weight / n_spk), len(patch_ids)


def build_patch_sampler(pcl_weight, proj_dim=256, kind="scalar", num_channels=None, window=1,
                        centre=False):
    """The recipes' ``patchsamplenet``: the ``kind`` (``pcl_patch``) of sampler with PCL on, else None.

    ``"scalar"``: :class:`PatchSampler`; ``"frame"``: :class:`FramePatchSampler`
    over ``num_channels`` encoder channels and ``window`` frames per patch.
    Building nothing with PCL off keeps a baseline run's random numbers
    (weight initialisation, crops) those of SpeechBrain's own recipe.

    >>> build_patch_sampler(0.0) is None, type(build_patch_sampler(2.0, proj_dim=8)).__name__
    (True, 'PatchSampler')
    >>> type(build_patch_sampler(2.0, 8, kind="frame", num_channels=16)).__name__
    'FramePatchSampler'
    """
    if kind not in PATCH_KINDS:
        raise ValueError(f"pcl_patch must be one of {PATCH_KINDS}, got {kind!r}")
    if not pcl_weight > 0:
        return None
    if kind == "scalar":
        return PatchSampler(proj_dim)
    return FramePatchSampler(num_channels, proj_dim, window=window, centre=centre)
