"""The training loop: `train`, and the `Trainer` that steps a head on a frozen encoder with AdamW (warmup, then
cosine decay: `training.schedule`), validates it and writes its checkpoints.

The encoder is frozen: no gradients, eval mode, run under `torch.no_grad`. The head's BatchNorm layers either
train (batch statistics of the global batch, synchronised across processes, running averages updated: the
default for a fresh head) or stay frozen at their stored statistics (the default when fine-tuning a
checkpoint); see `training.batchnorm`. Either way 2 processes of batch B/2 give the weights of 1 process of
batch B. Gradient accumulation trades freely with the batch size only with frozen BatchNorms, since training
ones see one micro-batch at a time.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from anydepth_cli.errors import TrainingError, UsageError
from anydepth_cli.inference.memory import LARGE_WEIGHTS, amount, hold_large_encoder_in, weights_memory
from anydepth_cli.inference.precision import autocast, training_dtype
from anydepth_cli.inference.predictor import select_device
from anydepth_cli.inference.preprocess import resize_map
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.training import distributed, run
from anydepth_cli.training.batchnorm import prepare_head, set_training_mode
from anydepth_cli.training.data import batches_per_epoch, make_loader
from anydepth_cli.training.distributed import World
from anydepth_cli.training.loss import LossTerms, activate_for_training, at_floor, depth_loss, silog_loss
from anydepth_cli.training.options import TrainOptions, crop_size, settings
from anydepth_cli.training.report import Reporter, TrainSummary
from anydepth_cli.training.schedule import lr_factor, param_groups, total_steps
from anydepth_cli.training.sources import DataReport, Source, training_data, validation_sources, write_data_lists
from anydepth_cli.training.start import Start, begin_run, resume_run, rng_state, set_rng_state
from anydepth_cli.training.validation import validate

DEAD_FRACTION = 0.95
"""A run whose first batch has at least this fraction of output pixels at the activation floor stops."""


def train(options: TrainOptions, reporter: Reporter) -> TrainSummary:
    """Run (or resume) the training `options` describe, in this process's place among the launcher's processes.

    Only rank 0 writes files and talks to `reporter`. TrainingError on a dead start (the head's output at its
    activation floor on the first batch; nothing is written), a non-finite loss or when memory runs out (the
    last checkpoint in the run folder is then the last good one).
    """
    options.check()
    world = distributed.world_from_env()
    device = distributed.device_for(world, select_device(options.device))
    distributed.init(world, device)
    try:
        return _train(options, world, device, reporter if world.main else Reporter())
    finally:
        distributed.shutdown(world)


def _train(options: TrainOptions, world: World, device: torch.device, reporter: Reporter) -> TrainSummary:
    start = resume_run(options, reporter) if options.resume else begin_run(options, world)
    return Trainer(start, world, device, reporter).run()


@dataclass
class _Data:
    """The training samples, this process's stream of their batches, and the validation sources."""

    report: DataReport
    batches: Iterator[dict[str, Any]]
    val: list[Source]
    per_epoch: int


def _training_data(options: TrainOptions, world: World, reporter: Reporter, crop: int, device: torch.device,
                   start: int) -> _Data:
    """Read and check the sources (rank 0 scans, the others receive its report) and open this process's batch
    stream at optimizer step `start`; UsageError when the data cannot fill one step."""
    report = training_data(options.data, world, reporter, roots=options.data_root, mix=options.mix, keep=options.keep,
                           depth_scale=options.depth_scale, max_depth=options.max_depth, workers=max(1, options.workers))
    val = validation_sources(options.val, reporter.note, options.data_root, options.depth_scale, options.max_depth)
    count = len(report.samples)
    per_epoch = batches_per_epoch(count, options.batch_size, world)
    if per_epoch < options.grad_accum:
        raise UsageError(f"{count} sample(s) cannot fill one step of {options.batch_size * options.grad_accum * world.size} "
                         "images: lower --batch-size or --grad-accum, or add data")
    loader = make_loader(report, crop, options.target, options.seed, options.batch_size, world,
                         start * options.grad_accum, options.workers, device.type == "cuda")
    return _Data(report, iter(loader), val, per_epoch)


def _dead_start(fraction: float, target: str, declared: str | None) -> TrainingError:
    """The one-line error of a head whose output sits at its activation floor."""
    if declared is not None and declared != target:
        advice = (f"the checkpoint declares {declared}: train it with --target {declared}, or start a fresh head "
                  "with --encoder-weights")
    else:
        advice = "start a fresh head with --encoder-weights, or use the --target the checkpoint was trained for"
    return TrainingError(f"dead start: {fraction:.1%} of the head's outputs sit at the activation floor (below its "
                         f"final ReLU) on the first batch, where no gradient of the ReLU reaches them: the starting "
                         f"weights do not fit this data and target. Stopped before the first step, nothing written. "
                         f"{advice[0].upper()}{advice[1:]}")


class Trainer:
    """One training run in this process: the network and its optimiser, the data, the metrics and checkpoints."""

    def __init__(self, start: Start, world: World, device: torch.device, reporter: Reporter) -> None:
        self.options, self.config, self.declared = start.options, start.config, start.declared
        self.world, self.device, self.reporter = world, device, reporter
        self.folder = self.options.output
        self.crop = crop_size(self.options, self.config)
        self.start = self.step = self.saved = start.step
        self.data = _training_data(self.options, world, reporter, self.crop, device, self.start)
        self.total, warmup = total_steps(self.options, self.data.per_epoch)
        self.dtype = torch.float64 if self.options.precision == "fp64" else training_dtype(self.options.precision, device)
        self.exact = torch.float64 if self.dtype == torch.float64 else torch.float32  # weights, inputs and loss
        self.network = self._prepare(start.network)
        self._optimisation(warmup)
        self.rows: list[dict[str, float]] = []
        if start.state is not None:
            self._restore(start.state)
        self.head: nn.Module = self.network.head
        if world.distributed:
            self.head = nn.parallel.DistributedDataParallel(
                self.head, device_ids=[device.index] if device.type == "cuda" else None)
        self.images_per_step = self.options.batch_size * self.options.grad_accum * world.size
        self.failures: set[str] = set()
        self.loss = math.nan
        self.val_failures_noted = False

    def _optimisation(self, warmup: int) -> None:
        """AdamW on the head, its warmup-then-cosine schedule, and the fp16 gradient scaler."""
        head = self.network.head
        self.parameters = [p for p in head.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(param_groups(head, self.options.weight_decay), lr=self.options.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda step: lr_factor(step, self.total, warmup))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def _prepare(self, network: DepthNetwork) -> DepthNetwork:
        """The network on this process's device in the exact dtype, the encoder frozen, the head's BatchNorms
        synchronised across processes when they train."""
        network = network.to(self.device, self.exact)
        hold_large_encoder_in(network, self.device, self.dtype)
        network.encoder.requires_grad_(False)
        network.head = prepare_head(network.head, self.options.batchnorm, self.world, self.device)
        set_training_mode(network, network.head, self.options.batchnorm)
        weights = weights_memory(network)
        if self.world.main and weights >= LARGE_WEIGHTS:
            self.reporter.note(f"the network's weights take about {amount(weights)} (float32); the frozen encoder "
                               "keeps no activations for backward")
        if self.world.main and self.options.input_size and self.crop != self.options.input_size:
            self.reporter.note(f"--input-size {self.options.input_size} rounded to {self.crop}, a multiple of the "
                               f"patch size {self.config.patch_size}")
        return network

    def _restore(self, state: dict[str, Any]) -> None:
        """The optimiser, schedule, scaler, RNG and metrics of a resumed run."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.rows = run.read_metrics(self.folder, self.start) if self.world.main else []
        if state["world_size"] != self.world.size:
            self.reporter.note(f"resuming on {self.world.size} process(es) instead of {state['world_size']}: the "
                               "global batch changes with them")

    def _autocast(self) -> Any:
        return autocast(self.device, self.dtype, self.exact)

    def _micro_step(self, batch: dict[str, Any], last: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch: its loss terms, output pixels at the floor and output pixels."""
        self.failures.update(e for e in batch["error"] if e)
        image = batch["image"].to(self.device, self.exact, non_blocking=True)
        target = batch["target"].to(self.device, self.exact, non_blocking=True)
        valid = batch["valid"].to(self.device, non_blocking=True)
        synced = last or self.head is self.network.head
        with nullcontext() if synced else self.head.no_sync():
            raw, terms = self._forward(image, target, valid)
            self.scaler.scale(terms.total / self.options.grad_accum).backward()
        losses = torch.stack([terms.total, terms.regression, terms.gradient]).detach() / self.options.grad_accum
        floor = torch.stack([at_floor(raw, self.config.activation), torch.tensor(raw.numel(), device=raw.device)]).to(self.exact)
        return torch.cat([losses, floor])

    def _forward(self, image: torch.Tensor, target: torch.Tensor,
                 valid: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        """The head's raw output on a micro-batch, and the loss terms of its prediction at the target's size."""
        with self._autocast():
            with torch.no_grad():
                features, grid = self.network.encoder(image)
            raw = self.head(features, grid)
        pred = activate_for_training(raw.to(self.exact), self.config.activation, self.config.output_floor,
                                     self.config.max_depth)
        pred = resize_map(pred, tuple(target.shape[-2:]), self.config)
        terms = (silog_loss(pred, target, valid, self.config.max_depth) if self.config.metric
                 else depth_loss(pred, target, valid))
        return raw, terms

    def _check(self, sums: torch.Tensor) -> None:
        """TrainingError on a dead first step or a non-finite loss."""
        if self.step == self.start and sums[3] >= DEAD_FRACTION * sums[4]:
            raise _dead_start(float(sums[3] / sums[4]), self.options.target, self.declared)
        if not math.isfinite(self.loss):
            raise TrainingError(f"the loss became non-finite at step {self.step + 1}; stopped. "
                                + (f"The last good checkpoint (step {self.saved}) is in {self.folder}"
                                   if self.saved else "No checkpoint was written yet")
                                + "; try a lower --lr")

    def _optimizer_step(self) -> float:
        """Clip, step and schedule; the learning rate the step used."""
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.parameters, self.options.clip_grad)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return lr

    def _train_step(self) -> None:
        """One optimizer step over --grad-accum micro-batches, recorded in the metrics."""
        tick = time.perf_counter()
        sums = torch.zeros(5, device=self.device, dtype=self.exact)
        for micro in range(self.options.grad_accum):
            sums += self._micro_step(next(self.data.batches), micro == self.options.grad_accum - 1)
        sums = distributed.mean(self.world, sums)
        self.loss = float(sums[0])
        self._check(sums)
        lr = self._optimizer_step()
        self.step += 1
        self.rows.append({"step": self.step, "loss": self.loss, "lr": lr, "val_abs_rel": math.nan,
                          "val_delta1": math.nan})
        self.reporter.step(self.step, self.loss, lr, self.images_per_step / max(time.perf_counter() - tick, 1e-9))

    def _maybe_validate(self) -> bool:
        """Validate when it is time (rank 0; the others wait); whether it was."""
        if not self.data.val or (self.step % self.options.val_every and self.step != self.total):
            return False
        if self.world.main:
            abs_rel, delta1, failures = validate(self.network, self.data.val, self.crop, self.device, self.dtype,
                                                 self.options)
            self._note_val_failures(failures)
            set_training_mode(self.network, self.network.head, self.options.batchnorm)
            self.rows[-1].update(val_abs_rel=abs_rel, val_delta1=delta1)
            self.reporter.validated(self.step, abs_rel, delta1)
        distributed.barrier(self.world)
        return True

    def _note_val_failures(self, failures: list[tuple[str, str]]) -> None:
        """Say once which validation samples are left out."""
        if failures and not self.val_failures_noted:
            image, reason = failures[0]
            self.reporter.note(f"validation skips {len(failures)} unreadable sample(s), e.g. {image}: {reason}")
            self.val_failures_noted = True

    def _save(self) -> None:
        """Write the run folder (rank 0): architecture, weights, resumable state, metrics and curves."""
        if self.world.main:
            if self.saved == self.start:
                run.write_arch(self.folder, self.config)
                write_data_lists(self.folder, self.data.report)
            # last.pth goes last: a run killed in between resumes from the previous one, and the metrics already
            # hold every row up to it.
            run.write_metrics(self.folder, self.rows)
            run.plot_losses(self.folder, self.rows)
            run.save_model(self.folder, self.network)
            run.save_last(self.folder, self._resumable_state())
        self.saved = self.step

    def _resumable_state(self) -> dict[str, Any]:
        """What last.pth holds: the step, architecture, head weights, optimiser, schedule, scaler and RNG states,
        the stored settings and the number of processes."""
        return {
            "step": self.step, "arch": self.config.to_dict(), "head": self.network.head.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_state(), "settings": settings(self.options),
            "world_size": self.world.size,
        }

    def _steps(self) -> None:
        """Train to the last step, validating and saving on schedule."""
        while self.step < self.total:
            self._train_step()
            validated = self._maybe_validate()
            if self.step % self.options.save_every == 0 or self.step == self.total or validated:
                self._save()

    def run(self) -> TrainSummary:
        """Train from the start step to the end; the summary."""
        self.reporter.start(self.total, self.start, self.images_per_step)
        began = time.perf_counter()
        try:
            self._steps()
        except (torch.cuda.OutOfMemoryError, MemoryError):
            raise TrainingError(f"out of memory at step {self.step + 1} with batch size {self.options.batch_size} and "
                                f"input size {self.crop}: lower --batch-size (raise --grad-accum to keep the batch) "
                                "or --input-size") from None
        except KeyboardInterrupt:
            self.reporter.note(f"interrupted at step {self.step}; the last checkpoint (step {self.saved}) is in "
                               f"{self.folder}: continue with --resume {self.folder}")
            raise
        finally:
            self.reporter.stop()
        return self._summary(time.perf_counter() - began)

    def _summary(self, seconds: float) -> TrainSummary:
        validated = [(int(r["step"]), r["val_abs_rel"], r["val_delta1"]) for r in self.rows
                     if not math.isnan(r["val_abs_rel"])]
        best = min(validated, key=lambda v: v[1], default=None)
        done = self.step - self.start
        return TrainSummary(self.folder, done, self.start, self.total, seconds, done * self.images_per_step, self.loss,
                            self.data.report, best, sorted(self.failures))


