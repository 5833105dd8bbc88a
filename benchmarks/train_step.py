"""Time of one training step of NASS against the plain separator it extends.

Two architectures, each built twice from the same seed from the LibriMix
recipe's own hparams files: NASS (C+1 outputs, PCL with the recipe's
weight 2, 256 patches, tau 0.07, D 256) and the plain separator (the same
file with ``noise_output: False, pcl_weight: 0``: C outputs, no PCL):

* Sepformer: ``sepformer-libri2mix.yaml`` as released (N 256, 2 dual-path
  layers of 8-layer transformers, K 250), with the recipes' fused attention
  (:mod:`nass.model.attention`) and the recipes' optimizer (Adam fused into
  one kernel on CUDA, :mod:`nass.training.optimizer`); a third variant,
  SpeechBrain's recipe step (NASS with SpeechBrain's attention as shipped,
  ``fused_attention: False``, and ``torch.optim.Adam`` with its defaults),
  gives the project's speedup over it.
* DPRNN: ``dprnn-libri2mix.yaml`` (SpeechBrain's WSJ0Mix configuration: N
  256, bi-LSTM intra/inter blocks with 256 units, 6 dual-path layers, K 250,
  a linear layer after each block).

The timed step is the recipes' own: ``SeparationBrain.fit_batch`` of a Brain
built as ``nass.training.recipe.run`` builds it, i.e. the forward and loss terms
(``SeparationBrain.training_terms``: for PCL the speakers' clean
representations under ``no_grad``, cut to the frames every utterance has;
the per-utterance objective) under the run's autocast (``--precision``);
the loss threshold and the finiteness check (a host sync); SpeechBrain's
``optimizers_step`` (backward through the GradScaler, ``clip_grad_norm_``
to the recipe's 5, Adam, ``zero_grad(set_to_none=True)``). Speed
perturbation and the random crop are turned off: they cost every variant
the same and would give them inputs of different lengths. Every variant
gets the same mixture: two speakers plus noise, ``--seconds`` long at
8 kHz, batch 1.

Each variant is warmed up once, then the variants of one architecture run in
alternation, repetition by repetition (NASS, plain, ..., NASS, plain, ...), so
that changes of machine load hit both. Times are medians; the NASS/plain
ratio is the median over repetitions of the ratio of the two steps run side
by side (the ratios of the medians and of the minima are printed too).
``--threads 1`` keeps a loaded machine from stalling torch's worker threads
on one another, which makes single steps vary by tens of percent.

PCL share: the PCL term, i.e. ``nass.losses.pcl.pcl_loss`` (aligning the estimates,
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

The last line reads ``ratio_nass_over_baseline=<x> pcl_share=<s>
ratio_dprnn=<x> speedup_over_speechbrain=<SpeechBrain's recipe step / the NASS step>``.

Example
-------
``python benchmarks/train_step.py --reps 5``
"""

import argparse
import copy
import functools
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

import speechbrain as sb  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402

from nass.training.brain import SeparationBrain  # noqa: E402
from nass.losses.objective import NASSObjective  # noqa: E402
from nass.losses.pcl import pcl_loss  # noqa: E402
from nass.model.precision import set_tf32, speechbrain_precision  # noqa: E402

HPARAMS = REPO_ROOT / "recipes/LibriMix/separation/hparams"
SEPFORMER_HPARAMS = HPARAMS / "sepformer-libri2mix.yaml"
DPRNN_HPARAMS = HPARAMS / "dprnn-libri2mix.yaml"
PLAIN_OVERRIDES = {"noise_output": False, "pcl_weight": 0}
EXPLICIT_ATTENTION = {"fused_attention": False}
# The timed batch is what the Brain sees after augmentation: no speed
# perturbation, no crop (same cost for every variant, and inputs of one length).
NO_AUGMENTATION = {"use_speedperturb": False, "limit_training_signal_len": False}
SAMPLE_RATE = 8000


@dataclass
class Batch:
    """One utterance, as a ``PaddedBatch`` gives it to ``SeparationBrain`` and as its parts."""

    mix: torch.Tensor
    speakers: torch.Tensor
    noise: torch.Tensor
    lengths: torch.Tensor

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        # mix_sig, s1_sig, .., noise_sig: (signals, relative lengths), as in a PaddedBatch.
        relative = torch.ones(self.mix.shape[0])
        if name == "mix_sig":
            return self.mix, relative
        if name == "noise_sig":
            return self.noise, relative
        if name.startswith("s") and name.endswith("_sig") and name[1:-4].isdigit():
            return self.speakers[..., int(name[1:-4]) - 1], relative
        raise AttributeError(name)

    def targets(self, noise_output):
        """As ``SeparationBrain.compute_forward``: the speakers, then the noise with the noise output."""
        if noise_output:
            return torch.cat([self.speakers, self.noise.unsqueeze(-1)], dim=-1)
        return self.speakers


def load_recipe(hparams_file, seed, scratch, *overrides):
    """A recipe's hparams with ``overrides`` merged in; ``scratch`` takes its folders."""
    merged = {"data_folder": scratch, "output_folder": scratch, "seed": seed, **NO_AUGMENTATION}
    for extra in overrides:
        merged.update(extra)
    with open(hparams_file, encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, merged)


class TrainStep:
    """``SeparationBrain.fit_batch`` on one batch: the recipes' own training step.

    The Brain is built as ``nass.training.recipe.run`` builds it (the separator, plus
    the patch sampler when PCL trains it; the recipe's optimizer; SpeechBrain's
    ``--precision`` and ``max_grad_norm``); ``fit_batch`` runs its forward and
    loss terms (``SeparationBrain.training_terms``) under the run's autocast,
    the threshold and finiteness checks, and SpeechBrain's
    ``optimizers_step`` (GradScaler, ``clip_grad_norm_``, Adam,
    ``zero_grad(set_to_none=True)``).

    Arguments
    ---------
    hparams : dict
        A recipe's hparams, loaded by :func:`load_recipe`.
    device : torch.device
    precision : str
        ``fp32``, ``tf32``, ``bf16`` or ``fp16``, as the recipe's ``--precision``.
    """

    def __init__(self, hparams, device, precision):
        modules = {"separator": hparams["separator"]}
        if hparams["patchsamplenet"] is not None:
            modules["patchsamplenet"] = hparams["patchsamplenet"]
        self.brain = SeparationBrain(
            modules=modules,
            opt_class=hparams["optimizer"],
            hparams=hparams,
            run_opts={"device": str(device), "precision": speechbrain_precision(precision)},
        )
        self.brain.init_optimizers()
        self.brain.modules.train()
        self.hparams = hparams

    @property
    def separator(self):
        return self.brain.separator_module

    @property
    def objective(self):
        return self.hparams["objective"]

    @property
    def autocast(self):
        return self.brain.training_ctx

    @property
    def params(self):
        return list(self.brain.modules.parameters())

    def __call__(self, batch):
        """Runs the step; returns the loss. Raises where the Brain skipped the step."""
        skipped = self.brain.skipped_steps
        loss = float(self.brain.fit_batch(batch))
        if self.brain.skipped_steps != skipped:
            # A skipped step does a fraction of the work: timing it would flatter the variant.
            raise RuntimeError(f"the Brain skipped this step (loss {loss}); check the inputs")
        return loss


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

    Its inputs come from the Brain's own forward of ``batch`` without
    gradients: the decoder inputs (made a leaf that requires grad, so the
    backward ends where, in the step, it would meet the separation loss's
    gradient), the clean representations and the PIT assignment, cut to the
    Brain's valid frames.
    """
    brain, separator, objective = step.brain, step.separator, step.objective
    with torch.no_grad(), step.autocast:
        predictions = brain.compute_forward(batch, sb.Stage.TRAIN)
        clean = separator.encode(predictions["speakers"])
        assignment, _ = objective.assign(
            predictions["estimates"], predictions["targets"], predictions["lengths"]
        )
    reps = predictions["reps"]
    sampler = step.brain.modules.patchsamplenet
    valid_frames = separator.valid_frames(int(predictions["lengths"].min()))
    reps = reps.detach().requires_grad_()

    def run():
        with step.autocast:
            pcl, _ = pcl_loss(
                sampler,
                objective.nce,
                reps,
                clean,
                assignment,
                objective.pcl_num_patches,
                objective.pcl_weight,
                valid_frames=valid_frames,
            )
        pcl.mean().backward()
        reps.grad = None
        sampler.zero_grad(set_to_none=True)

    return run


def clean_encode(step, batch):
    """The NASS step's encoder pass on the speakers, under ``no_grad``."""
    separator = step.separator

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
    shallow = copy.deepcopy(step.separator)
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
    separator, objective = step.separator, step.objective
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
    optimizer = step.hparams["optimizer"](shadow)  # the recipe's: fused Adam on CUDA

    def run():
        torch.nn.utils.clip_grad_norm_(shadow, step.hparams["max_grad_norm"])
        optimizer.step()

    return run


# Names of the timed cases; breakdown parts get "|nass" and "|plain" appended.
SEP_NASS, SEP_PLAIN = "Sepformer NASS step", "Sepformer plain step"
SEP_EXPLICIT = "Sepformer NASS step, SpeechBrain's recipe step"
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

    The steps: NASS and plain as the recipes run them, and NASS as
    SpeechBrain's recipe would (its attention and Adam; all three from the same seed).
    Returns ``(steps, parts, batch)``: the two timings and the batch for the
    DPRNN run.
    """
    hparams = load_recipe(SEPFORMER_HPARAMS, args.seed, scratch)
    batch = make_batch(args.seconds, hparams["num_spks"], args.seed, device)
    nass = TrainStep(hparams, device, args.precision)
    plain = TrainStep(
        load_recipe(SEPFORMER_HPARAMS, args.seed, scratch, PLAIN_OVERRIDES), device, args.precision
    )
    speechbrains = load_recipe(SEPFORMER_HPARAMS, args.seed, scratch, EXPLICIT_ATTENTION)
    # SpeechBrain's recipes name torch.optim.Adam as it comes.
    speechbrains["optimizer"] = functools.partial(torch.optim.Adam, lr=speechbrains["lr"],
                                                  weight_decay=0)
    explicit = TrainStep(speechbrains, device, args.precision)
    # PCL alone runs right after each pair, so that its share pairs with that NASS step.
    steps = interleave(
        {
            SEP_NASS: lambda: nass(batch),
            SEP_PLAIN: lambda: plain(batch),
            PCL_PART: pcl_alone(nass, batch),
            SEP_EXPLICIT: lambda: explicit(batch),
        },
        args.reps,
        sync=sync,
        progress=progress_printer("Sepformer", args.reps),
    )
    del explicit
    cases = {}
    for name, factory, both in BREAKDOWN:
        cases[f"{name}|nass"] = factory(nass, batch)
        if both:
            cases[f"{name}|plain"] = factory(plain, batch)
    parts = interleave(cases, PART_REPS_PER_STEP_REP * args.reps, sync=sync)
    return steps, parts, batch


def run_dprnn(args, device, batch, scratch, sync):
    """Times the DPRNN NASS and plain steps (``dprnn-libri2mix.yaml``) in alternation."""
    nass = TrainStep(load_recipe(DPRNN_HPARAMS, args.seed, scratch), device, args.precision)
    plain = TrainStep(
        load_recipe(DPRNN_HPARAMS, args.seed, scratch, PLAIN_OVERRIDES), device, args.precision
    )
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
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
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
    if args.precision == "tf32" and args.device != "cuda":
        parser.error("--precision tf32 needs --device cuda (TF32 is a CUDA matrix format)")
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    # As the recipe does: import speechbrain turned TF32 on, which fp32 is not.
    set_tf32(args.precision, device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    print(machine_summary())
    print(
        f"one training step, {args.seconds:g} s at {SAMPLE_RATE} Hz, batch 1, {args.precision}, "
        f"{args.device}; {args.reps} alternating repetitions after 1 warm-up each"
    )
    # The hparams files name data and output folders; nothing is read, but folders are made.
    with tempfile.TemporaryDirectory(prefix="nass-bench-") as scratch:
        sepformer, parts, batch = run_sepformer(args, device, scratch, sync)
        # Free the Sepformers before the DPRNNs are built.
        gc.collect()
        dprnn = run_dprnn(args, device, batch, scratch, sync)
    report(sepformer, parts, dprnn)


def report(sepformer, parts, dprnn):
    """Prints the step table, the breakdown and the last line."""
    sep_nass, sep_plain = sepformer.seconds[SEP_NASS], sepformer.seconds[SEP_PLAIN]
    pcl = sepformer.seconds[PCL_PART]
    sep_explicit = sepformer.seconds[SEP_EXPLICIT]
    dprnn_nass, dprnn_plain = dprnn.seconds[DPRNN_NASS], dprnn.seconds[DPRNN_PLAIN]
    rows = [
        timing_row("Sepformer plain", sep_plain, sep_plain),
        timing_row("Sepformer NASS", sep_nass, sep_plain),
        timing_row("  PCL alone (sampler + PatchNCE, fwd+bwd)", pcl, sep_nass),
        timing_row("Sepformer NASS, SpeechBrain's step (attention, Adam)", sep_explicit, sep_nass),
        timing_row("DPRNN plain", dprnn_plain, dprnn_plain),
        timing_row("DPRNN NASS", dprnn_nass, dprnn_plain),
    ]
    headers = ["variant", "median ms", "min ms", "max ms", "ratio", "of medians", "of minima"]
    print()
    print(format_table(headers, rows))
    print(
        "ratio: median over repetitions of NASS step / plain step, run side by side; "
        "PCL row: PCL / NASS step (pcl_share); SpeechBrain's step row: its step / the "
        "NASS step (speedup_over_speechbrain)"
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
            speedup_over_speechbrain=paired_ratio(sep_explicit, sep_nass),
        )
    )


if __name__ == "__main__":
    main()
