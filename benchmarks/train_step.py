"""Time of one training step of NASS against the plain separator it extends.

Two architectures, each built twice from the same seed: NASS (C+1 outputs,
PCL with the recipe's weight 2, 256 patches, tau 0.07, D 256) and the plain
separator (C outputs, no PCL):

* Sepformer: ``recipes/LibriMix/separation/hparams/sepformer-libri2mix.yaml``
  as released (N 256, 2 dual-path layers of 8-layer transformers, K 250);
  the plain one is the same file with ``noise_output: False, pcl_weight: 0``.
* DPRNN: SpeechBrain's ``recipes/WSJ0Mix/separation/hparams/dprnn.yaml``
  (N 256, bi-LSTM intra/inter blocks with 256 units, 6 dual-path layers,
  K 250, a linear layer after each block), with the same NASS settings.

The timed step is ``SeparationBrain.fit_batch`` followed by SpeechBrain's
``Brain.optimizers_step``: the forward under the run's autocast; for PCL
(NASS only) the speakers' clean representations under ``no_grad``, and the
representations cut to the frames every utterance has; the per-utterance
objective; the loss threshold and the finiteness check (a host sync, as in
the Brain); backward through the GradScaler; ``clip_grad_norm_`` to the
recipe's 5; Adam; ``zero_grad(set_to_none=True)``. Speed perturbation and
the random crop are left out: they cost both variants the same and would
give them inputs of different lengths. Both variants get the same mixture:
two speakers plus noise, ``--seconds`` long at 8 kHz, batch 1.

Each variant is warmed up once, then the variants of one architecture run in
alternation, repetition by repetition (NASS, plain, NASS, plain, ...), so
that changes of machine load hit both. Times are medians; the NASS/plain
ratio is the median over repetitions of the ratio of the two steps run side
by side (the ratios of the medians and of the minima are printed too).
``--threads 1`` keeps a loaded machine from stalling torch's worker threads
on one another, which makes single steps vary by tens of percent.

PCL share: the PCL term, i.e. ``nass.pcl.pcl_loss`` (aligning the estimates,
the patch sampler on every representation, PatchNCE) forward, and its
backward down to the representations and into the sampler's weights, is
timed alone on the representations of one NASS forward of the same mixture,
right after the two steps of each repetition. The share is its time over
that repetition's NASS step, the median over repetitions.

Breakdown (Sepformer): what NASS adds to the step, each part timed alone
with forward and backward, in an alternation of its own after the steps
(three times as many repetitions, the parts being short): the clean encoder
pass on the speakers; the mask head and decoder with C+1 against C outputs
(a copy of the separator without its dual-path blocks, so what remains is
the encoder, the mask net's input layers, its final 1x1 conv2d, overlap-add,
gated output convs, end conv and the decoder); SI-SNR matrix and PIT over
C+1 against C outputs; PCL (from the step alternation); gradient clipping
and Adam over each variant's parameters. Their sum is printed next to the
measured difference of the two steps.

The last line reads
``ratio_nass_over_baseline=<x> pcl_share=<s> ratio_dprnn=<x>``.

Example
-------
``python benchmarks/train_step.py --reps 5``
"""

import argparse
import copy
import gc
import statistics
import sys
import tempfile
from dataclasses import dataclass

import torch
from torch import nn

from _common import (
    REPO_ROOT,
    format_table,
    interleave,
    last_line,
    machine_summary,
    paired_ratio,
    use_checkout,
)

use_checkout()

from hyperpyyaml import load_hyperpyyaml  # noqa: E402
from speechbrain.lobes.models.dual_path import (  # noqa: E402
    Decoder,
    Dual_Path_Model,
    Encoder,
    SBRNNBlock,
)
from speechbrain.utils.autocast import AMPConfig, TorchAutocast  # noqa: E402

from nass.objective import NASSObjective  # noqa: E402
from nass.outputs import Outputs  # noqa: E402
from nass.pcl import PatchSampler, pcl_loss  # noqa: E402
from nass.separator import NoiseAwareSeparator  # noqa: E402

SEPFORMER_HPARAMS = REPO_ROOT / "recipes/LibriMix/separation/hparams/sepformer-libri2mix.yaml"
PLAIN_OVERRIDES = {"noise_output": False, "pcl_weight": 0}
SAMPLE_RATE = 8000

# SpeechBrain's recipes/WSJ0Mix/separation/hparams/dprnn.yaml.
DPRNN_CHANNELS = 256
DPRNN_HIDDEN = 256
DPRNN_LAYERS = 6
DPRNN_CHUNK = 250
DPRNN_KERNEL = 16
DPRNN_STRIDE = 8


@dataclass
class Model:
    """A separator with its objective; ``sampler`` is the PCL patch sampler (NASS only)."""

    separator: NoiseAwareSeparator
    objective: NASSObjective
    sampler: PatchSampler = None


@dataclass
class Batch:
    """One utterance as ``SeparationBrain`` sees it after augmentation."""

    mix: torch.Tensor
    speakers: torch.Tensor
    noise: torch.Tensor
    lengths: torch.Tensor

    def targets(self, noise_output):
        """As ``SeparationBrain.compute_forward``: the speakers, then the noise with the noise output."""
        if noise_output:
            return torch.cat([self.speakers, self.noise.unsqueeze(-1)], dim=-1)
        return self.speakers


def load_sepformer(nass, seed, scratch):
    """``(Model, hparams)`` from the release Sepformer file; ``scratch`` takes its folders."""
    overrides = {"data_folder": scratch, "output_folder": scratch, "seed": seed}
    if not nass:
        overrides.update(PLAIN_OVERRIDES)
    with open(SEPFORMER_HPARAMS, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    objective = hparams["objective"]
    return Model(hparams["separator"], objective, hparams["patchsamplenet"]), hparams


def build_dprnn(nass, seed, hparams):
    """DPRNN as in SpeechBrain's WSJ0Mix recipe, with the NASS settings of ``hparams``."""
    torch.manual_seed(seed)
    num_spks = hparams["num_spks"]

    def rnn_block():
        return SBRNNBlock(
            input_size=DPRNN_CHANNELS,
            hidden_channels=DPRNN_HIDDEN,
            num_layers=1,
            rnn_type="LSTM",
            dropout=0,
            bidirectional=True,
        )

    masknet = Dual_Path_Model(
        in_channels=DPRNN_CHANNELS,
        out_channels=DPRNN_CHANNELS,
        intra_model=rnn_block(),
        inter_model=rnn_block(),
        num_layers=DPRNN_LAYERS,
        norm="ln",
        K=DPRNN_CHUNK,
        num_spks=num_spks + int(nass),
        skip_around_intra=True,
        linear_layer_after_inter_intra=True,
    )
    separator = NoiseAwareSeparator(
        Encoder(kernel_size=DPRNN_KERNEL, out_channels=DPRNN_CHANNELS),
        masknet,
        Decoder(
            in_channels=DPRNN_CHANNELS,
            out_channels=1,
            kernel_size=DPRNN_KERNEL,
            stride=DPRNN_STRIDE,
            bias=False,
        ),
        num_spks=num_spks,
        noise_output=nass,
    )
    sampler = PatchSampler(hparams["pcl_proj_dim"]) if nass else None
    objective = NASSObjective(
        Outputs(num_spks, noise_output=nass, noise_assignment=hparams["noise_assignment"]),
        pcl_weight=hparams["pcl_weight"] if nass else 0.0,
        pcl_num_patches=hparams["pcl_num_patches"],
        pcl_temperature=hparams["pcl_temperature"],
    )
    return Model(separator, objective, sampler)


class TrainStep:
    """``SeparationBrain.fit_batch`` and ``Brain.optimizers_step`` on one batch.

    Arguments
    ---------
    model : Model
    hparams : dict
        The recipe's ``lr``, ``max_grad_norm``, ``threshold``,
        ``threshold_byloss`` and ``loss_upper_lim``.
    device : torch.device
    precision : str
        ``fp32``, ``bf16`` or ``fp16``, SpeechBrain's ``--precision``.
    """

    def __init__(self, model, hparams, device, precision):
        self.model = model
        # The Brain's modules: the separator, plus the sampler when PCL trains it.
        modules = nn.ModuleList([model.separator])
        if model.sampler is not None:
            modules.append(model.sampler)
        modules.to(device).train()
        self.params = list(modules.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=hparams["lr"], weight_decay=0)
        self.autocast = TorchAutocast(
            device_type=device.type, dtype=AMPConfig.from_name(precision).dtype
        )
        self.scaler = torch.GradScaler(device.type, enabled=precision == "fp16")
        self.hparams = hparams

    def losses(self, batch):
        """``compute_forward`` and ``compute_objectives`` (TRAIN): per-utterance terms."""
        separator, objective = self.model.separator, self.model.objective
        with self.autocast:
            estimates, reps = separator(batch.mix, return_reps=True)
            clean = None
            if objective.uses_pcl:
                with torch.no_grad():
                    clean = separator.encode(batch.speakers)
                frames = valid_frames(separator, batch.lengths, reps.shape[-1])
                reps, clean = reps[..., :frames], clean[..., :frames]
            return objective(
                estimates, batch.targets(separator.noise_output), reps, clean, batch.lengths,
                patch_sampler=self.model.sampler,
            )

    def __call__(self, batch):
        """Runs the step; returns the loss. Raises where the Brain would skip the step."""
        hp = self.hparams
        per_utt = self.losses(batch)["loss"].float()
        if hp["threshold_byloss"]:
            keep = per_utt > hp["threshold"]
        else:
            keep = torch.ones_like(per_utt, dtype=torch.bool)
        loss = per_utt[keep].mean() if keep.any() else per_utt.mean()
        value = loss.item()
        if not (bool(keep.any()) and torch.isfinite(loss) and value < hp["loss_upper_lim"]):
            # A skipped step does a fraction of the work: timing it would flatter the variant.
            raise RuntimeError(f"the Brain would skip this step (loss {value}); check the inputs")
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, hp["max_grad_norm"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return value


def valid_frames(separator, lengths, n_frames):
    """``SeparationBrain._valid_frames``: PCL patches come from frames every utterance has.

    The encoder frames computed from the shortest utterance's samples only;
    all ``n_frames`` for a batch without padding, like the one timed here.
    """
    conv = separator.encoder.conv1d
    valid = (int(lengths.min()) - conv.kernel_size[0]) // conv.stride[0] + 1
    return max(1, min(n_frames, valid))


def make_batch(seconds, num_spks, seed, device):
    """Speakers and noise drawn from ``seed``; the mixture is their sum, as in the Brain."""
    length = int(round(seconds * SAMPLE_RATE))
    gen = torch.Generator().manual_seed(seed)
    speakers = 0.1 * torch.randn(1, length, num_spks, generator=gen)
    noise = 0.05 * torch.randn(1, length, generator=gen)
    mix = speakers.sum(-1) + noise
    lengths = torch.full((1,), length, dtype=torch.long)
    return Batch(mix.to(device), speakers.to(device), noise.to(device), lengths.to(device))


def pcl_alone(step, batch):
    """A callable running the PCL term alone, forward and backward, as the NASS step does.

    Its inputs come from one NASS forward of ``batch`` without gradients:
    the decoder inputs (made a leaf that requires grad, so the backward
    ends where, in the step, it would meet the separation loss's gradient),
    the clean representations and the PIT assignment.
    """
    separator, objective = step.model.separator, step.model.objective
    with torch.no_grad(), step.autocast:
        estimates, reps = separator(batch.mix, return_reps=True)
        clean = separator.encode(batch.speakers)
        assignment, _ = objective.assign(estimates, batch.targets(True), batch.lengths)
    frames = valid_frames(separator, batch.lengths, reps.shape[-1])
    reps, clean = reps[..., :frames].detach().requires_grad_(), clean[..., :frames]
    sampler = step.model.sampler

    def run():
        with step.autocast:
            pcl = pcl_loss(
                sampler,
                objective.nce,
                reps,
                clean,
                assignment,
                objective.pcl_num_patches,
                objective.pcl_weight,
            )
        pcl.mean().backward()
        reps.grad = None
        sampler.zero_grad(set_to_none=True)

    return run


def clean_encode(step, batch):
    """The NASS step's encoder pass on the speakers, under ``no_grad``."""
    separator = step.model.separator

    def run():
        with torch.no_grad(), step.autocast:
            separator.encode(batch.speakers)

    return run


def head_alone(step, batch):
    """Forward and backward of the separator without its dual-path blocks.

    What is left (encoder, the mask net's norm, input conv and segmentation,
    its PReLU, final 1x1 conv2d, overlap-add, gated output convs, end conv
    and ReLU, the masking and the decoder) is where the number of outputs
    changes the work; NASS minus plain is the cost of the extra mask.
    """
    shallow = copy.deepcopy(step.model.separator)
    shallow.masknet.dual_mdl = nn.ModuleList()
    shallow.masknet.num_layers = 0

    def run():
        with step.autocast:
            estimates, _ = shallow(batch.mix, return_reps=True)
        estimates.float().sum().backward()
        shallow.zero_grad(set_to_none=True)

    return run


def separation_alone(step, batch):
    """Forward and backward of the SI-SNR matrix and PIT on the variant's outputs."""
    separator, objective = step.model.separator, step.model.objective
    without_pcl = NASSObjective(objective.outputs, pcl_weight=0.0)
    with torch.no_grad(), step.autocast:
        estimates = separator(batch.mix)
    estimates = estimates.detach().requires_grad_()
    targets = batch.targets(separator.noise_output)

    def run():
        with step.autocast:
            loss = without_pcl(estimates, targets, lengths=batch.lengths)["loss"]
        loss.mean().backward()
        estimates.grad = None

    return run


def optimizer_alone(step):
    """Gradient clipping and Adam over tensors shaped like the step's parameters.

    Shadow tensors keep the timed updates off the models that are being
    benchmarked; their gradients stay allocated, as after a backward.
    """
    shadow = [torch.zeros_like(p).requires_grad_() for p in step.params]
    for tensor in shadow:
        tensor.grad = torch.full_like(tensor, 1e-3)
    optimizer = torch.optim.Adam(shadow, lr=step.hparams["lr"], weight_decay=0)

    def run():
        torch.nn.utils.clip_grad_norm_(shadow, step.hparams["max_grad_norm"])
        optimizer.step()

    return run


# Names of the timed cases; breakdown parts get "|nass" and "|plain" appended.
SEP_NASS, SEP_PLAIN = "Sepformer NASS step", "Sepformer plain step"
DPRNN_NASS, DPRNN_PLAIN = "DPRNN NASS step", "DPRNN plain step"
PCL_PART = "PCL: patch sampler + PatchNCE"
OPTIMIZER_PART = "clip_grad_norm_ + Adam, each variant's parameters"
# The parts are short, so they are repeated more often than the steps.
PART_REPS_PER_STEP_REP = 3
# (part, factory of the timed callable, whether the plain variant has it too)
BREAKDOWN = (
    ("clean encoder pass on the C speakers (no_grad)", clean_encode, False),
    ("mask head + decoder, C+1 vs C outputs", head_alone, True),
    ("SI-SNR matrix + PIT, C+1 vs C outputs", separation_alone, True),
    (OPTIMIZER_PART, lambda step, batch: optimizer_alone(step), True),
)


def progress_printer(label, reps):
    """Per-repetition times on stderr, so that a long run shows it is alive."""

    def show(rep, seconds):
        steps = ", ".join(f"{name} {s:.2f} s" for name, s in seconds.items() if " step" in name)
        print(f"[{label}] rep {rep + 1}/{reps}: {steps}", file=sys.stderr, flush=True)

    return show


def median_difference_ms(a, b):
    """Median over repetitions of ``a[i] - b[i]``, in ms."""
    return 1e3 * statistics.median(x - y for x, y in zip(a, b))


def run_sepformer(args, device, scratch, sync):
    """Times the Sepformer steps in alternation, then the breakdown parts in alternation.

    Returns ``(steps, parts, hparams, batch)``: the two timings, and the NASS
    hparams and the batch for the DPRNN run.
    """
    nass_model, hparams = load_sepformer(True, args.seed, scratch)
    plain_model, _ = load_sepformer(False, args.seed, scratch)
    batch = make_batch(args.seconds, hparams["num_spks"], args.seed, device)
    nass = TrainStep(nass_model, hparams, device, args.precision)
    plain = TrainStep(plain_model, hparams, device, args.precision)
    # PCL alone runs right after each pair, so that its share pairs with that NASS step.
    steps = interleave(
        {
            SEP_NASS: lambda: nass(batch),
            SEP_PLAIN: lambda: plain(batch),
            PCL_PART: pcl_alone(nass, batch),
        },
        args.reps,
        sync=sync,
        progress=progress_printer("Sepformer", args.reps),
    )
    cases = {}
    for name, factory, both in BREAKDOWN:
        cases[f"{name}|nass"] = factory(nass, batch)
        if both:
            cases[f"{name}|plain"] = factory(plain, batch)
    parts = interleave(cases, PART_REPS_PER_STEP_REP * args.reps, sync=sync)
    return steps, parts, hparams, batch


def run_dprnn(args, device, batch, hparams, sync):
    """Times the DPRNN NASS and plain steps in alternation."""
    nass = TrainStep(build_dprnn(True, args.seed, hparams), hparams, device, args.precision)
    plain = TrainStep(build_dprnn(False, args.seed, hparams), hparams, device, args.precision)
    return interleave(
        {DPRNN_NASS: lambda: nass(batch), DPRNN_PLAIN: lambda: plain(batch)},
        args.reps,
        sync=sync,
        progress=progress_printer("DPRNN", args.reps),
    )


def timing_row(label, times, reference):
    """Median, min and max in ms, and ``times`` against ``reference`` three ways.

    The paired ratio (median of per-repetition ratios) is the headline; the
    ratios of the medians and of the minima show how far the load moved it.
    """
    return [
        label,
        f"{1e3 * statistics.median(times):.1f}",
        f"{1e3 * min(times):.1f}",
        f"{1e3 * max(times):.1f}",
        f"{paired_ratio(times, reference):.4f}",
        f"{statistics.median(times) / statistics.median(reference):.4f}",
        f"{min(times) / min(reference):.4f}",
    ]


def breakdown_rows(parts, pcl):
    """Rows of the breakdown table and the total NASS adds, in ms.

    ``parts`` is the timing of the :data:`BREAKDOWN` parts, ``pcl`` the PCL
    times from the step alternation.
    """
    medians = []
    for name, _, both in BREAKDOWN:
        plain = parts.median_ms(f"{name}|plain") if both else None
        medians.append((name, parts.median_ms(f"{name}|nass"), plain))
    # PCL goes before the optimizer, in the order the step runs them.
    medians.insert(-1, (PCL_PART, 1e3 * statistics.median(pcl), None))
    rows, total = [], 0.0
    for name, nass, plain in medians:
        extra = nass - (plain or 0.0)
        total += extra
        shown = "-" if plain is None else f"{plain:.1f}"
        rows.append([name, f"{nass:.1f}", shown, f"{extra:+.1f}"])
    return rows, total


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--reps", type=int, default=5, help="timed steps per variant (default 5)"
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="mixture length in s at 8 kHz (default 2)"
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--seed", type=int, default=1234, help="model and input seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, one per core); 1 is steadier "
        "on a machine that other jobs load",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if args.precision == "fp16" and args.device != "cuda":
        parser.error("--precision fp16 needs --device cuda (SpeechBrain refuses fp16 on CPU)")
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    print(machine_summary())
    print(
        f"one training step, {args.seconds:g} s at {SAMPLE_RATE} Hz, batch 1, {args.precision}, "
        f"{args.device}; {args.reps} alternating repetitions after 1 warm-up each"
    )
    # The hparams file names data and output folders; nothing is read, but folders are made.
    with tempfile.TemporaryDirectory(prefix="nass-bench-") as scratch:
        sepformer, parts, hparams, batch = run_sepformer(args, device, scratch, sync)
    # Free the Sepformers before the DPRNNs are built.
    gc.collect()
    dprnn = run_dprnn(args, device, batch, hparams, sync)
    report(sepformer, parts, dprnn)


def report(sepformer, parts, dprnn):
    """Prints the step table, the breakdown and the last line."""
    sep_nass, sep_plain = sepformer.seconds[SEP_NASS], sepformer.seconds[SEP_PLAIN]
    pcl = sepformer.seconds[PCL_PART]
    dprnn_nass, dprnn_plain = dprnn.seconds[DPRNN_NASS], dprnn.seconds[DPRNN_PLAIN]
    rows = [
        timing_row("Sepformer plain", sep_plain, sep_plain),
        timing_row("Sepformer NASS", sep_nass, sep_plain),
        timing_row("  PCL alone (sampler + PatchNCE, fwd+bwd)", pcl, sep_nass),
        timing_row("DPRNN plain", dprnn_plain, dprnn_plain),
        timing_row("DPRNN NASS", dprnn_nass, dprnn_plain),
    ]
    headers = ["variant", "median ms", "min ms", "max ms", "ratio", "of medians", "of minima"]
    print()
    print(format_table(headers, rows))
    print(
        "ratio: median over repetitions of NASS step / plain step, run side by side; "
        "PCL row: PCL / NASS step (pcl_share)"
    )

    breakdown, explained = breakdown_rows(parts, pcl)
    measured = median_difference_ms(sep_nass, sep_plain)
    breakdown.append(["sum of the parts NASS adds", "", "", f"{explained:+.1f}"])
    breakdown.append(
        ["measured: NASS step - plain step (median of pairs)", "", "", f"{measured:+.1f}"]
    )
    print()
    print("Sepformer: where the NASS step's extra time goes (each part alone, medians)")
    print(format_table(["part", "NASS ms", "plain ms", "extra ms"], breakdown))
    print()
    print(
        last_line(
            ratio_nass_over_baseline=paired_ratio(sep_nass, sep_plain),
            pcl_share=paired_ratio(pcl, sep_nass),
            ratio_dprnn=paired_ratio(dprnn_nass, dprnn_plain),
        )
    )


if __name__ == "__main__":
    main()
