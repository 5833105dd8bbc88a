"""The SpeechBrain ``Brain`` shared by every NASS recipe (LibriMix, WHAM!, custom).

The recipes' ``train.py`` only load the hparams, prepare the data and call
:func:`nass.recipe.run`; everything a training step does lives here:

* TRAIN: speed perturbation of the speakers, mixture re-summed with the noise,
  random crop; separation with C(+1) outputs; per-utterance SI-SNR PIT loss
  plus PCL; utterances below ``threshold`` dropped; non-finite or too large
  losses skip the step (counted and logged).
* VALID/TEST: the noise output is assigned as in training and dropped; the
  stage's ``si-snr`` is the negative SI-SNR of the speakers (PIT over C),
  the key checkpoints are kept by.
* :meth:`SeparationBrain.write_test_results`: ``test_results.csv`` with
  SI-SNR, SI-SNRi, SDR, SDRi per utterance and an ``avg`` row.
"""

import csv
import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.nnet.schedulers import ReduceLROnPlateau, update_learning_rate
from speechbrain.utils.distributed import if_main_process
from tqdm import tqdm

from nass.augment import random_crop, remix_with_speed_perturb
from nass.metrics import utterance_metrics
from nass.pit import align

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["snt_id", "sdr", "sdr_i", "si-snr", "si-snr_i"]


class SeparationBrain(sb.Brain):
    """Trains and evaluates a :class:`nass.separator.NoiseAwareSeparator`.

    Expects in ``hparams``: ``separator``, ``objective``
    (:class:`nass.objective.NASSObjective`), ``num_spks``, ``noise_output``,
    ``use_speedperturb``, ``speed_perturb_speeds``, ``limit_training_signal_len``,
    ``training_signal_len``, ``threshold``, ``threshold_byloss``,
    ``loss_upper_lim``, ``lr_scheduler``, ``train_logger``, ``save_audio``,
    ``n_audio_to_save``, ``output_folder``, ``sample_rate``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_steps = 0
        self._terms = {}

    # -- batches -------------------------------------------------------------
    def _signals(self, batch):
        """``mix [B, T]``, speakers ``[B, T, C]``, noise ``[B, T]`` or None, lengths."""
        mix, rel = batch.mix_sig
        mix = mix.to(self.device)
        speakers = torch.stack(
            [getattr(batch, f"s{k}_sig")[0] for k in range(1, self.hparams.num_spks + 1)],
            dim=-1,
        ).to(self.device)
        noise = batch.noise_sig[0].to(self.device) if hasattr(batch, "noise_sig") else None
        lengths = torch.round(rel.to(self.device) * mix.shape[1]).long()
        return mix, speakers, noise, lengths

    def _targets(self, speakers, noise):
        """What the outputs are trained against: speakers, plus noise with the noise output."""
        if self.hparams.noise_output:
            return torch.cat([speakers, noise.unsqueeze(-1)], dim=-1)
        return speakers

    def compute_forward(self, batch, stage):
        """Separates the (augmented) mixture; returns everything the losses need."""
        mix, speakers, noise, lengths = self._signals(batch)
        if stage == sb.Stage.TRAIN:
            with torch.no_grad():
                if self.hparams.use_speedperturb:
                    mix, sources, lengths = remix_with_speed_perturb(
                        speakers, noise, lengths, self.hparams.speed_perturb_speeds
                    )
                    speakers = sources[..., : self.hparams.num_spks]
                    noise = sources[..., -1] if noise is not None else None
                if self.hparams.limit_training_signal_len:
                    both = speakers if noise is None else torch.cat([speakers, noise[..., None]], -1)
                    mix, both, lengths = random_crop(
                        mix, both, lengths, self.hparams.training_signal_len
                    )
                    speakers = both[..., : self.hparams.num_spks]
                    noise = both[..., -1] if noise is not None else None
        estimates, reps = self.modules.separator(mix, return_reps=True)
        return {
            "mix": mix,
            "estimates": estimates,
            "reps": reps,
            "speakers": speakers,
            "targets": self._targets(speakers, noise),
            "lengths": lengths,
        }

    def compute_objectives(self, predictions, batch, stage):
        """TRAIN: per-utterance NASS loss ``[B]``; else speakers' negative SI-SNR ``[B]``."""
        objective = self.hparams.objective
        est, targets, lengths = predictions["estimates"], predictions["targets"], predictions["lengths"]
        if stage == sb.Stage.TRAIN:
            reps, clean = predictions["reps"], None
            if objective.uses_pcl:
                with torch.no_grad():
                    clean = self.separator_module.encode(predictions["speakers"])
                # Patches come from frames every utterance of the batch has, not padding.
                frames = self._valid_frames(int(lengths.min()), reps.shape[-1])
                reps, clean = reps[..., :frames], clean[..., :frames]
            return objective(est, targets, reps, clean, lengths)
        return objective.speaker_loss(est, targets, lengths)

    def training_terms(self, batch):
        """A training step's per-utterance loss terms: ``compute_forward`` + ``compute_objectives``.

        What :meth:`fit_batch` differentiates (under the run's autocast), and
        what ``benchmarks/train_step.py`` times, so that both run one code.
        """
        predictions = self.compute_forward(batch, sb.Stage.TRAIN)
        return self.compute_objectives(predictions, batch, sb.Stage.TRAIN)

    def _valid_frames(self, n_samples, n_frames):
        """Encoder frames computed from the first ``n_samples`` samples only."""
        conv = self.separator_module.encoder.conv1d
        valid = (n_samples - conv.kernel_size[0]) // conv.stride[0] + 1
        return max(1, min(n_frames, valid))

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
        if not self.hparams.threshold_byloss:
            keep = torch.ones_like(keep)
        loss = per_utt[keep].mean() if keep.any() else per_utt.mean()
        usable = bool(keep.any()) and bool(torch.isfinite(loss)) and loss.item() < self.hparams.loss_upper_lim
        if self.distributed_launch:
            # Every rank must take the same branch, or DDP's all-reduce waits forever.
            flag = torch.tensor([0.0 if usable else 1.0], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            usable = flag.item() == 0.0
        if usable:
            self.scaler.scale(loss).backward()
            self.optimizers_step()
            self._track(terms, keep)
        else:
            self.skipped_steps += 1
            logger.warning(
                "skipping step %d: loss %s (non-finite, above loss_upper_lim=%s, or every "
                "utterance below threshold=%s); %d step(s) skipped so far",
                self.step, loss.item(), self.hparams.loss_upper_lim,
                self.hparams.threshold, self.skipped_steps,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=self.device)
        return loss.detach().cpu()

    def _track(self, terms, keep):
        for name in ("separation", "pcl"):
            total, count = self._terms.get(name, (0.0, 0))
            self._terms[name] = (total + terms[name][keep].sum().item(), count + int(keep.sum()))

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

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rate and keeps the best checkpoint."""
        stats = {"si-snr": stage_loss}
        if stage == sb.Stage.TRAIN:
            for name, (total, count) in self._terms.items():
                stats[f"{name}_loss"] = total / max(count, 1)
            stats["skipped_steps"] = self.skipped_steps
            self.train_stats = stats
        elif stage == sb.Stage.VALID:
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
    def write_test_results(self, test_data, loader_opts=None, min_key="si-snr"):
        """Loads the best checkpoint, then writes per-utterance metrics to ``test_results.csv``.

        The noise output is assigned as in training and dropped; SI-SNR is
        taken with PIT over the speakers and SDR is BSS-Eval's, each against
        the mixture as the baseline. Saves separated audio for the first
        ``n_audio_to_save`` utterances when ``save_audio``. This is the test
        stage: one pass over the test set gives both the csv and the log line.
        """
        self.on_evaluate_start(min_key=min_key)
        out_file = Path(self.hparams.output_folder) / "test_results.csv"
        # One utterance at a time: metrics need each file's own length.
        workers = (loader_opts or {}).get("num_workers", 0)
        loader = sb.dataio.dataloader.make_dataloader(test_data, batch_size=1, num_workers=workers)
        self.modules.eval()
        rows, saved = [], 0
        objective = self.hparams.objective
        for batch in tqdm(loader, dynamic_ncols=True, disable=not if_main_process()):
            with torch.no_grad(), self.evaluation_ctx:
                predictions = self.compute_forward(batch, sb.Stage.TEST)
            est = predictions["estimates"].float()
            assignment, _ = objective.assign(est, predictions["targets"].float())
            aligned = align(est, assignment)[0].cpu()
            mix = predictions["mix"][0].float().cpu()
            speakers = aligned[:, : self.hparams.num_spks]
            metrics = utterance_metrics(speakers, predictions["speakers"][0].float().cpu(), mix)
            rows.append({"snt_id": batch.id[0], **metrics})
            if self.hparams.save_audio and saved < self.hparams.n_audio_to_save:
                noise = aligned[:, -1] if self.hparams.noise_output else None
                self._save_audio(batch.id[0], mix, speakers, noise)
                saved += 1
        averages = {k: float(np.mean([r[k] for r in rows])) for k in RESULT_COLUMNS[1:]}
        if if_main_process():
            with open(out_file, "w", newline="") as fout:
                writer = csv.DictWriter(fout, fieldnames=RESULT_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
                writer.writerow({"snt_id": "avg", **averages})
            for key, value in averages.items():
                logger.info("Mean %s is %.3f", key, value)
        self.on_stage_end(sb.Stage.TEST, -averages["si-snr"])
        return rows, averages

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
            peak = sig.abs().max().clamp(min=1e-8)
            sf.write(
                os.fspath(folder / f"{snt_id}_{name}.wav"),
                (sig / peak * 0.9).numpy(),
                self.hparams.sample_rate,
                subtype="FLOAT",
            )
