"""The SpeechBrain ``Brain`` shared by every NASS recipe (LibriMix, WHAM!, custom).

A training step: speed perturbation of the speakers, the mixture re-summed
with the noise, a random crop, separation, the per-utterance objective
(:mod:`nass.losses.objective`), utterances below ``threshold`` dropped and
unusable losses skipped (counted); ``pcl_grad_share`` leaves out samples whose
gradients are not finite (``pcl_grad_share_skipped``). Validation and test score the speakers
(noise output assigned as in training, then dropped); :meth:`write_test_results`
writes ``test_results.csv``. Under DDP training calls the modules through
their wrappers; evaluation splits the test set between processes and gathers the rows.
"""

import csv
import logging
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.nnet.schedulers import ReduceLROnPlateau, update_learning_rate
from speechbrain.utils.distributed import if_main_process
from tqdm import tqdm

from nass.audio import write_wav
from nass.training.augment import random_crop, remix_with_speed_perturb
from nass.metrics import mean_of_defined, utterance_scores
from nass.losses.pit import align

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["snt_id", "sdr", "sdr_i", "si-snr", "si-snr_i"]
# How validation and test SI-SNR appear in train_log.txt: in dB, higher is better.
SI_SNR_LOG_KEY = "si-snr (dB)"


class SeparationBrain(sb.Brain):
    """Trains and evaluates a :class:`nass.model.separator.NoiseAwareSeparator`.

    Expects in ``modules``: ``separator`` and, with PCL on, ``patchsamplenet``.
    Expects in ``hparams``: ``objective`` (:class:`nass.losses.objective.NASSObjective`),
    ``outputs`` (:class:`nass.model.outputs.Outputs`), ``use_speedperturb``, ``speed_perturb_speeds``, ``limit_training_signal_len``,
    ``training_signal_len``, ``threshold``, ``threshold_byloss``,
    ``loss_upper_lim``, ``lr_scheduler``, ``train_logger``, ``save_audio``,
    ``n_audio_to_save``, ``output_folder``, ``sample_rate``, ``pcl_grad_every``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_steps = 0
        self._pcl_grad_share_skipped = 0
        self._terms = {}

    @property
    def outputs(self):
        """The model's outputs (:class:`nass.model.outputs.Outputs`)."""
        return self.hparams.outputs

    # -- batches -------------------------------------------------------------
    def _signals(self, batch):
        """``mix [B, T]``, ``sources [B, T, C(+1)]`` (speakers, then the noise if the data has it), lengths."""
        mix, rel = batch.mix_sig
        names = [f"s{k}_sig" for k in range(1, self.outputs.num_spks + 1)]
        if hasattr(batch, "noise_sig"):
            names.append("noise_sig")
        sources = torch.stack([getattr(batch, name)[0] for name in names], dim=-1)
        lengths = torch.round(rel * mix.shape[1]).long()
        return mix.to(self.device), sources.to(self.device), lengths.to(self.device)

    def compute_forward(self, batch, stage):
        """Separates the (augmented) mixture; returns everything the losses need.

        ``sources`` stays one ``[B, T, C(+1)]`` tensor through the
        augmentation; ``targets`` is what the outputs are trained against
        (the speakers, plus the noise with the noise output).
        """
        mix, sources, lengths = self._signals(batch)
        if stage == sb.Stage.TRAIN:
            with torch.no_grad():
                if self.hparams.use_speedperturb:
                    mix, sources, lengths = remix_with_speed_perturb(
                        sources, lengths, self.outputs.num_spks, self.hparams.speed_perturb_speeds
                    )
                if self.hparams.limit_training_signal_len:
                    mix, sources, lengths = random_crop(
                        mix, sources, lengths, self.hparams.training_signal_len
                    )
            separator = self.modules.separator
        else:
            separator = self.separator_module
        estimates, reps = separator(mix, return_reps=True)
        return {
            "mix": mix,
            "estimates": estimates,
            "reps": reps,
            "speakers": sources[..., : self.outputs.num_spks],
            "targets": sources[..., : self.outputs.num_outputs],
            "lengths": lengths,
        }

    def compute_objectives(self, predictions, batch, stage):
        """TRAIN: per-utterance NASS loss ``[B]``; else speakers' negative SI-SNR ``[B]``."""
        objective = self.hparams.objective
        est, targets, lengths = predictions["estimates"], predictions["targets"], predictions["lengths"]
        if stage == sb.Stage.TRAIN:
            if not objective.uses_pcl:
                return objective(est, targets, lengths=lengths)
            with torch.no_grad():
                clean = self.separator_module.encode(predictions["speakers"])
            return objective(
                est, targets, predictions["reps"], clean, lengths,
                patch_sampler=self.modules.patchsamplenet,
                valid_frames=self.separator_module.valid_frames(int(lengths.min())),
            )
        return objective.speaker_loss(est, targets, lengths)

    def training_terms(self, batch):
        """A training step's per-utterance loss terms: ``compute_forward`` + ``compute_objectives``.

        What :meth:`fit_batch` differentiates (under the run's autocast), and
        what ``benchmarks/train_step.py`` times, so that both run one code.
        """
        predictions = self.compute_forward(batch, sb.Stage.TRAIN)
        return self.compute_objectives(predictions, batch, sb.Stage.TRAIN)

    @property
    def separator_module(self):
        """The separator without its DDP wrapper."""
        module = self.modules.separator
        return getattr(module, "module", module)

    # -- training step -------------------------------------------------------
    def fit_batch(self, batch):
        """One optimisation step, or a counted skip when the loss is unusable."""
        with self.training_ctx:
            terms = self.training_terms(batch)
        per_utt = terms["loss"].float()
        keep = per_utt > self.hparams.threshold
        if not self.hparams.threshold_byloss or not keep.any():
            # With no utterance above the threshold the reference trains on the
            # full loss (what its code does at batch_size 1); so does this, at any size.
            keep = torch.ones_like(keep)
        loss = per_utt[keep].mean()
        usable = bool(torch.isfinite(loss)) and loss.item() < self.hparams.loss_upper_lim
        if self.distributed_launch:
            # Every rank must take the same branch, or DDP's all-reduce waits forever.
            flag = torch.tensor([0.0 if usable else 1.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            usable = flag.item() == 0.0
        if usable:
            every = self.hparams.pcl_grad_every
            if self.hparams.objective.uses_pcl and every and self.step % every == 1 % every:
                self._sample_pcl_grad_share(terms, keep)
            self.scaler.scale(loss).backward()
            self.optimizers_step()
            self._track(terms, keep)
        else:
            self.skipped_steps += 1
            logger.warning(
                "skipping step %d: loss %s (non-finite, or above loss_upper_lim=%s); "
                "%d step(s) skipped so far",
                self.step, loss.item(), self.hparams.loss_upper_lim, self.skipped_steps,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=self.device)
        return loss.detach().cpu()

    def _track(self, terms, keep):
        for name in ("separation", "pcl"):
            total, count = self._terms.get(name, (0.0, 0))
            self._terms[name] = (total + terms[name][keep].sum().item(), count + int(keep.sum()))
        if self.hparams.objective.uses_pcl:
            total, count = self._terms.get("pcl_chance", (0.0, 0))
            self._terms["pcl_chance"] = (total + terms["pcl_chance"] * int(keep.sum()),
                                         count + int(keep.sum()))

    def _sample_pcl_grad_share(self, terms, keep):
        """Logs ``||d PCL / d masknet|| / ||d separation / d masknet||`` for this step.

        Two extra backward passes through the kept graph (hence only every
        ``pcl_grad_every`` steps); both terms are scaled alike, so the ratio
        is that of the unscaled gradients, and gradients are not accumulated
        into ``.grad``. A sample whose gradients are not finite is left out
        and counted (``pcl_grad_share_skipped``).
        """
        params = [p for p in self.separator_module.masknet.parameters() if p.requires_grad]
        norms = {}
        for name in ("separation", "pcl"):
            term = self.scaler.scale(terms[name][keep].float().mean())
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norms[name] = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
        if not all(bool(torch.isfinite(norm)) for norm in norms.values()):
            # An overflow fp16's GradScaler will skip the step for: no ratio to average.
            self._pcl_grad_share_skipped += 1
            logger.info("step %d: pcl_grad_share not sampled (non-finite gradients); %d "
                        "sample(s) left out this epoch", self.step, self._pcl_grad_share_skipped)
            return
        share = (norms["pcl"] / norms["separation"].clamp(min=1e-30)).item()
        logger.info("step %d: pcl_grad_share %.4g (|grad pcl| / |grad separation| at the "
                    "mask network)", self.step, share)
        total, count = self._terms.get("pcl_grad_share", (0.0, 0))
        self._terms["pcl_grad_share"] = (total + share, count + 1)

    def evaluate_batch(self, batch, stage):
        """Speakers' negative SI-SNR averaged over the batch."""
        with torch.no_grad(), self.evaluation_ctx:
            predictions = self.compute_forward(batch, stage)
            loss = self.compute_objectives(predictions, batch, stage)
        return loss.mean().detach().cpu()

    # -- stages --------------------------------------------------------------
    def on_stage_start(self, stage, epoch=None):
        """Resets the per-epoch loss terms and skip counter."""
        if stage == sb.Stage.TRAIN:
            self._terms = {}
            self.skipped_steps = 0
            self._pcl_grad_share_skipped = 0

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rate and keeps the best checkpoint.

        The logs show the training loss as ``loss`` and, for validation and
        test, the speakers' SI-SNR in dB with its true sign (higher is
        better); checkpoints keep the loss under the release's ``si-snr``
        key (lower is better), so the release's checkpoints are ranked alike.
        """
        if stage == sb.Stage.TRAIN:
            stats = {"loss": stage_loss}
            means = {name: total / max(count, 1) for name, (total, count) in self._terms.items()}
            for name in ("separation", "pcl"):
                if name in means:
                    stats[f"{name}_loss"] = means[name]
            if means.get("pcl_chance"):
                stats["pcl_vs_chance"] = means["pcl"] / means["pcl_chance"]
            if "pcl_grad_share" in means:
                stats["pcl_grad_share"] = means["pcl_grad_share"]
            if "pcl_grad_share" in means or self._pcl_grad_share_skipped:
                stats["pcl_grad_share_skipped"] = self._pcl_grad_share_skipped
            stats["skipped_steps"] = self.skipped_steps
            self.train_stats = stats
            return
        # Formatted here: the logger writes negative numbers in scientific notation.
        stats = {SI_SNR_LOG_KEY: f"{-float(stage_loss):.2f}"}
        if stage == sb.Stage.VALID:
            scheduler = self.hparams.lr_scheduler
            if isinstance(scheduler, ReduceLROnPlateau):
                current_lr, next_lr = scheduler([self.optimizer], epoch, stage_loss)
                update_learning_rate(self.optimizer, next_lr)
            else:
                current_lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": current_lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(meta={"si-snr": stage_loss}, min_keys=["si-snr"])
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )

    # -- test results --------------------------------------------------------
    def load_for_evaluation(self, checkpoint):
        """Loads exactly ``checkpoint`` (a ``CKPT+...`` folder of this run's save folder)."""
        wanted = Path(checkpoint).resolve()
        found = [c for c in self.checkpointer.list_checkpoints() if Path(c.path).resolve() == wanted]
        if not found:
            raise FileNotFoundError(
                f"checkpoint {checkpoint} is not in {self.checkpointer.checkpoints_dir}"
            )
        self.checkpointer.load_checkpoint(found[0])

    def write_test_results(self, test_data, checkpoint, loader_opts=None):
        """Evaluates ``checkpoint`` and writes per-utterance metrics to ``test_results.csv``.

        The checkpoint is named in the log and in ``<output_folder>/test_checkpoint.txt``.
        The noise output is assigned as in training and dropped; SI-SNR is
        taken with PIT over the speakers and SDR is BSS-Eval's, each against
        the mixture as the baseline. Saves separated audio for the first
        ``n_audio_to_save`` utterances when ``save_audio``. This is the test
        stage: one pass over the test set gives both the csv and the log line.
        Under DDP each process evaluates every N-th utterance and the rows
        are gathered, so the csv is the one a single process writes.
        """
        self.load_for_evaluation(checkpoint)
        output_folder = Path(self.hparams.output_folder)
        if if_main_process():
            logger.info("Evaluating checkpoint %s", checkpoint)
            (output_folder / "test_checkpoint.txt").write_text(f"{Path(checkpoint).resolve()}\n")
        rank, world = self._process_slot()
        indices = list(range(rank, len(test_data), world))
        # One utterance at a time: metrics need each file's own length.
        workers = (loader_opts or {}).get("num_workers", 0)
        loader = sb.dataio.dataloader.make_dataloader(
            test_data, batch_size=1, num_workers=workers, sampler=indices
        )
        self.modules.eval()
        rows = []
        quiet = self.noprogressbar or not if_main_process()
        for index, batch in zip(indices, tqdm(loader, dynamic_ncols=True, disable=quiet)):
            rows.append((index, self._test_row(batch, save_audio=index < self.hparams.n_audio_to_save)))
        if world > 1:
            shards = [None] * world
            torch.distributed.all_gather_object(shards, rows)
            rows = [row for shard in shards for row in shard]
        rows = [row for _, row in sorted(rows, key=lambda pair: pair[0])]
        averages, excluded = mean_of_defined(rows, RESULT_COLUMNS[1:])
        if if_main_process():
            with open(output_folder / "test_results.csv", "w", newline="") as fout:
                writer = csv.DictWriter(fout, fieldnames=RESULT_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
                writer.writerow({"snt_id": "avg", **averages})
            for key, value in averages.items():
                logger.info("Mean %s is %.3f dB", key, value)
            for key, ids in excluded.items():
                logger.warning("The avg %s leaves out %d of %d utterance(s) where it is NaN: %s",
                               key, len(ids), len(rows), ", ".join(ids))
        self.on_stage_end(sb.Stage.TEST, -averages["si-snr"])
        return rows, averages

    def _process_slot(self):
        """``(rank, world size)``: ``(0, 1)`` outside DDP."""
        if self.distributed_launch and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _test_row(self, batch, save_audio):
        """The metrics row of one test utterance; saves its audio when asked.

        Scores that are undefined for this utterance (too short, silent
        references: :func:`nass.metrics.utterance_scores`) are NaN, with a
        warning naming it.
        """
        n_samples = batch.mix_sig[0].shape[1]
        kernel = self.separator_module.encoder.conv1d.kernel_size[0]
        if n_samples < kernel:
            logger.warning("test utterance %s: %d samples, fewer than the encoder's %d: "
                           "not separated, no score", batch.id[0], n_samples, kernel)
            return {"snt_id": batch.id[0], **dict.fromkeys(RESULT_COLUMNS[1:], float("nan"))}
        with torch.no_grad(), self.evaluation_ctx:
            predictions = self.compute_forward(batch, sb.Stage.TEST)
        est = predictions["estimates"].float()
        assignment, _ = self.hparams.objective.assign(est, predictions["targets"].float())
        aligned = align(est, assignment)[0].cpu()
        mix = predictions["mix"][0].float().cpu()
        speakers = aligned[:, : self.outputs.num_spks]
        metrics, problems = utterance_scores(speakers, predictions["speakers"][0].float().cpu(), mix)
        if problems:
            logger.warning("test utterance %s: %s", batch.id[0], "; ".join(problems))
        if self.hparams.save_audio and save_audio:
            noise = aligned[:, -1] if self.outputs.noise_output else None
            self._save_audio(batch.id[0], mix, speakers, noise)
        return {"snt_id": batch.id[0], **metrics}

    def _save_audio(self, snt_id, mix, speakers, noise):
        """Writes ``<id>_mix.wav``, ``<id>_spk<k>.wav`` and ``<id>_noise.wav`` (peak-normalised)."""
        folder = Path(self.hparams.output_folder) / "audio_results"
        folder.mkdir(parents=True, exist_ok=True)
        signals = {"mix": mix}
        for k in range(speakers.shape[-1]):
            signals[f"spk{k + 1}"] = speakers[:, k]
        if noise is not None:
            signals["noise"] = noise
        for name, sig in signals.items():
            write_wav(folder / f"{snt_id}_{name}.wav", sig, self.hparams.sample_rate, normalize=True)
