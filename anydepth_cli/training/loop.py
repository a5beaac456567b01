"""The training loop: a frozen encoder, a trained head, AdamW with warmup and cosine decay, checkpoints.

The encoder is frozen: no gradients, eval mode, run under `torch.no_grad`. The head's BatchNorm layers either
train (batch statistics of the global batch, synchronised across processes, running averages updated: the
default for a fresh head) or stay frozen at their stored statistics (the default when fine-tuning a
checkpoint); see `training.batchnorm`. Either way 2 processes of batch B/2 give the weights of 1 process of
batch B. Gradient accumulation trades freely with the batch size only with frozen BatchNorms, since training
ones see one micro-batch at a time.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from anydepth_cli.errors import TrainingError, UsageError
from anydepth_cli.evaluation.runner import run_eval
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.inference.memory import (LARGE_WEIGHTS, amount, hold_large_encoder_in, require_weights_memory,
                                           weights_memory)
from anydepth_cli.inference.precision import PRECISIONS as INFERENCE_PRECISIONS
from anydepth_cli.inference.precision import autocast, training_dtype
from anydepth_cli.inference.predictor import DepthPredictor, select_device
from anydepth_cli.inference.preprocess import resize_map
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.models.registry import DEFAULT_MODEL, get_encoder, get_model
from anydepth_cli.training import distributed, run
from anydepth_cli.training.batchnorm import MODES as BATCHNORM_MODES
from anydepth_cli.training.batchnorm import prepare_head, set_training_mode
from anydepth_cli.training.data import batches_per_epoch, make_loader
from anydepth_cli.training.distributed import World
from anydepth_cli.training.loss import TARGET_MIDDLE, activate_for_training, at_floor, depth_loss, silog_loss
from anydepth_cli.training.report import Reporter, TrainSummary
from anydepth_cli.training.sources import (DataReport, Source, metric_range, parse_values, training_data,
                                          validation_sources, write_data_lists)
from anydepth_cli.weights.checkpoint import load_encoder_weights, load_network
from anydepth_cli.weights.choice import choose_weights, encoder_weights_path, weights_path

TARGETS = ("depth", "disparity", "metric")
TARGET_ACTIVATIONS = {"depth": "relu+0.001", "disparity": "relu", "metric": "sigmoid"}
"""The final activation trained for each target: AnyDepth's ReLU + 0.001 for depth, Depth Anything's ReLU for disparity,
Depth Anything V2's metric sigmoid × max_depth for metric depth."""
PRECISIONS = (*INFERENCE_PRECISIONS, "fp64")
"""fp64 is a reference mode: it shows that runs which differ only in float rounding agree."""
RESUMED = ("data", "target", "val", "val_every", "steps", "epochs", "batch_size", "grad_accum", "lr", "weight_decay",
           "warmup", "input_size", "seed", "keep", "depth_scale", "save_every", "clip_grad", "data_root", "mix",
           "max_depth", "batchnorm")
"""The options a run stores; `--resume` reuses them unless they are given again."""
WARMUP_FRACTION = 0.05
DEAD_FRACTION = 0.95
"""A run whose first batch has at least this fraction of output pixels at the activation floor stops."""


@dataclass(frozen=True)
class TrainOptions:
    """What `anydepth train` was asked to do (the command-line options)."""

    data: tuple[Path, ...]
    output: Path
    model: str | None = None
    arch: Path | None = None
    checkpoint: str | None = None
    encoder_weights: str | Path | None = None
    """A backbone file or hf://ORG/REPO/FILE."""
    encoder: str | None = None
    """A registry encoder (`models.registry.ENCODER_MODELS`): its architecture, and its weights as --encoder-weights."""
    target: str | None = None
    """None: depth, or the target of the run being resumed."""
    val: tuple[Path, ...] = ()
    val_every: int = 1000
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int | None = None
    input_size: int | None = None
    precision: str = "auto"
    device: str = "auto"
    workers: int = 4
    seed: int = 0
    keep: float | None = None
    resume: bool = False
    depth_scale: float = 1000.0
    save_every: int = 500
    clip_grad: float = 1.0
    data_root: tuple[Path, ...] = ()
    """`DIR`, or `NAME=DIR` for one dataset: what relative and foreign paths of list files resolve against."""
    mix: str | None = None
    """`NAME=WEIGHT,...`: the probability of drawing each dataset (None: in proportion to their sizes)."""
    max_depth: str | None = None
    """`NAME=METRES,...`: depth caps replacing the datasets' defaults (inf: none)."""
    batchnorm: str | None = None
    """None: `train` for a fresh head, `frozen` for a checkpoint (or the mode of the run being resumed)."""
    explicit: frozenset[str] = frozenset()
    """The fields given on the command line; when resuming, the others are the run's own (RESUMED)."""

    def check(self) -> None:
        """UsageError for any option out of range or in conflict with another."""
        problems = []
        if self.target is not None and self.target not in TARGETS:
            problems.append(f"--target must be depth, disparity or metric, not {self.target!r}")
        if self.target == "metric" and metric_range(self.max_depth) is None:
            problems.append("--target metric needs --max-depth M, the head's range in metres (e.g. 20 indoors, "
                            "80 outdoors)")
        if self.batchnorm is not None and self.batchnorm not in BATCHNORM_MODES:
            problems.append(f"--batchnorm must be train or frozen, not {self.batchnorm!r}")
        if self.steps is None and self.epochs is None and not self.resume:
            problems.append("say how long to train: --steps N and/or --epochs N")
        for name in ("steps", "epochs", "batch_size", "grad_accum", "val_every", "save_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if not self.lr > 0:
            problems.append("--lr must be positive")
        if self.weight_decay < 0 or self.workers < 0 or (self.warmup is not None and self.warmup < 0):
            problems.append("--weight-decay, --workers and --warmup cannot be negative")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)}")
        if not self.clip_grad > 0:
            problems.append("--clip-grad must be positive")
        if self.keep is not None and not 0.0 < self.keep <= 1.0:
            problems.append(f"--keep must be a fraction in (0, 1], got {self.keep}")
        if not self.depth_scale > 0:
            problems.append("--depth-scale must be positive")
        for option, text, finite in (("--mix", self.mix, True), ("--max-depth", self.max_depth, False)):
            try:
                parse_values(text, option, finite, bare=option == "--max-depth")
            except UsageError as exc:
                problems.append(str(exc))
        if sum(x is not None for x in (self.model, self.arch, self.encoder)) > 1:
            problems.append("pass one of --model, --arch and --encoder")
        if self.encoder is not None and (self.checkpoint is not None or self.encoder_weights is not None):
            problems.append("--encoder brings its own weights: drop --checkpoint and --encoder-weights")
        if self.encoder_weights is not None and self.checkpoint is not None:
            problems.append("--encoder-weights starts a fresh head: it cannot be combined with --checkpoint")
        if self.arch is not None and self.checkpoint is None and self.encoder_weights is None and not self.resume:
            problems.append("--arch needs --checkpoint FILE (a whole network) or --encoder-weights FILE (a backbone)")
        if problems:
            raise UsageError("; ".join(problems))


def training_config(config: NetworkConfig, target: str, max_depth: float | None = None) -> NetworkConfig:
    """`config` as trained for `target`: its output kind and final activation (with `max_depth`, the range of a
    metric head), in the training layout."""
    return replace(config, output=target, activation=TARGET_ACTIVATIONS[target], layout=run.TRAIN_LAYOUT,
                   max_depth=max_depth if target == "metric" else None)


def _source_config(options: TrainOptions) -> NetworkConfig:
    """The architecture --arch or --model names (the default model's when neither), as it declares itself."""
    if options.arch is not None:
        return NetworkConfig.from_file(options.arch)
    if options.encoder is not None:
        return get_encoder(options.encoder).config
    return get_model(options.model or DEFAULT_MODEL).config


def fresh_network(config: NetworkConfig, encoder_weights: Path, seed: int) -> DepthNetwork:
    """A network of `config` whose encoder comes from a backbone state dict and whose head is newly initialised.

    The head has PyTorch's default initialisation except the last convolution's bias, TARGET_MIDDLE: the first
    outputs then sit near the middle of the normalised target's range, above the final ReLU (so every pixel gets a
    gradient) and no farther than half the range from any target.
    """
    torch.manual_seed(seed)
    network = DepthNetwork(config)
    load_encoder_weights(network, encoder_weights)
    last = [m for m in network.head.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.constant_(last.bias, TARGET_MIDDLE)
    return network.eval()


def _start_network(options: TrainOptions, config: NetworkConfig, world: World) -> DepthNetwork:
    """The network training starts from: a registry model or checkpoint, or a backbone with a fresh head."""
    if options.encoder_weights is not None:
        return fresh_network(config, _main_first(world, lambda: encoder_weights_path(options.encoder_weights)),
                             options.seed)
    choice = choose_weights(options.model, options.checkpoint, options.arch)
    return load_network(config, _main_first(world, lambda: weights_path(choice)))


def _main_first(world: World, fetch: Callable[[], Path]) -> Path:
    """`fetch()` in the main process first (one process downloads), then in the others (they find it cached)."""
    path = fetch() if world.main else None
    distributed.barrier(world)
    return path if path is not None else fetch()


def settings(options: TrainOptions) -> dict[str, Any]:
    """The RESUMED options as plain values (paths as strings), for last.pth."""
    values = {name: getattr(options, name) for name in RESUMED}
    return {name: [str(p) for p in value] if isinstance(value, tuple) else value for name, value in values.items()}


def _resumed_options(options: TrainOptions, stored: dict[str, Any]) -> tuple[TrainOptions, list[str]]:
    """`options` with the run's stored settings for every RESUMED option not given again, and the names of those
    given again with another value."""
    restored = {name: tuple(Path(p) for p in value) if isinstance(value, list) else value for name, value in stored.items()}
    changed = [name for name, value in restored.items() if name in options.explicit and getattr(options, name) != value]
    kept = {name: value for name, value in restored.items() if name in RESUMED and name not in options.explicit}
    return replace(options, **kept), changed


def _resumed_config(state: dict[str, Any], options: TrainOptions) -> NetworkConfig:
    """The architecture of the run being resumed; UsageError when --model, --arch or --target name another one."""
    stored = NetworkConfig.from_dict(state["arch"])
    target = options.target or stored.output
    named = training_config(_source_config(options) if options.model or options.arch or options.encoder else stored,
                            target, metric_range(options.max_depth))
    if named != stored:
        ours, theirs = named.to_dict(), stored.to_dict()
        differences = [f"{k} {theirs[k]}→{ours[k]}" for k in ours if ours[k] != theirs[k]]
        raise UsageError(f"cannot resume {options.output}: it was trained with another architecture "
                         f"({', '.join(differences)}); drop --model/--arch/--target or start a new run")
    return stored


def crop_size(options: TrainOptions, config: NetworkConfig) -> int:
    """The side of the square training crops: --input-size (default 518, or 512 for patch-16 encoders) rounded
    to a multiple of the patch size."""
    patch = config.patch_size
    size = options.input_size or (518 if patch == 14 else 512)
    return max(patch, round(size / patch) * patch)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(head: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the weight matrices and kernels; none on biases, norms and the fusion weights."""
    decay = [p for p in head.parameters() if p.ndim >= 2]
    plain = [p for p in head.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _validate(network: DepthNetwork, sources: list[Source], size: int, device: torch.device, dtype: torch.dtype,
              options: TrainOptions) -> tuple[float, float, list[tuple[str, str]]]:
    """Mean AbsRel and δ1 of the network on the validation sources, aligned in its own space (as `anydepth eval`),
    and the samples that could not be scored (image, reason).

    An fp64 network is validated through an fp32 copy.
    """
    if dtype == torch.float64:
        network, dtype = copy.deepcopy(network).float(), torch.float32
    predictor = DepthPredictor(network, size, device, dtype, options.batch_size)
    result = run_eval([source.data for source in sources], {"model": predictor}, get_preset("default"),
                      batch_size=options.batch_size)
    return result.aggregates["model"]["abs_rel"], result.aggregates["model"]["delta1"], result.failures


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


@dataclass
class _Start:
    """Where a run starts: its options (target and BatchNorm mode resolved), architecture, network and, when
    resumed, its stored state."""

    options: TrainOptions
    config: NetworkConfig
    network: DepthNetwork
    state: dict[str, Any] | None = None
    declared: str | None = None
    """The output kind the starting checkpoint declares (None for a fresh head or a resumed run)."""

    @property
    def step(self) -> int:
        return int(self.state["step"]) if self.state is not None else 0


def _resume(options: TrainOptions, reporter: Reporter) -> _Start:
    """The run in options.output, as it was last saved, with its own settings unless given again."""
    state = run.load_last(options.output)
    options, changed = _resumed_options(options, state["settings"])
    if changed:
        reporter.note(f"resuming with another {', '.join(changed)}: the result will differ from an uninterrupted run")
    config = _resumed_config(state, options)
    require_weights_memory(config)
    network = load_network(config, options.output / run.MODEL)
    network.head.load_state_dict(state["head"])
    options = replace(options, target=config.output, batchnorm=options.batchnorm or "frozen")
    return _Start(options, config, network, state)


def _begin(options: TrainOptions, world: World) -> _Start:
    """A new run in options.output: UsageError when that folder already holds one."""
    if (options.output / run.LAST).exists():
        raise UsageError(f"{options.output} already holds a training run: continue it with --resume {options.output} "
                         "or choose another -o")
    if options.encoder is not None:
        options = replace(options, encoder_weights=get_encoder(options.encoder).reference)
    fresh = options.encoder_weights is not None
    source = _source_config(options)
    options = replace(options, target=options.target or "depth",
                      batchnorm=options.batchnorm or ("train" if fresh else "frozen"))
    config = training_config(source, options.target, metric_range(options.max_depth))
    require_weights_memory(config)
    network = _start_network(options, config, world)
    return _Start(options, config, network, declared=None if fresh else source.output)


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


def _total_steps(options: TrainOptions, per_epoch: int) -> tuple[int, int]:
    """(steps, warmup steps) of the whole run."""
    limits = [options.steps, options.epochs and max(1, options.epochs * per_epoch // options.grad_accum)]
    total = min(s for s in limits if s)
    return total, round(WARMUP_FRACTION * total) if options.warmup is None else options.warmup


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


class _Run:
    """One training run in this process: the network and its optimiser, the data, the metrics and checkpoints."""

    def __init__(self, start: _Start, world: World, device: torch.device, reporter: Reporter) -> None:
        self.options, self.config, self.declared = start.options, start.config, start.declared
        self.world, self.device, self.reporter = world, device, reporter
        self.folder = self.options.output
        self.crop = crop_size(self.options, self.config)
        self.start = self.step = self.saved = start.step
        self.data = _training_data(self.options, world, reporter, self.crop, device, self.start)
        self.total, warmup = _total_steps(self.options, self.data.per_epoch)
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
        self.optimizer = torch.optim.AdamW(_param_groups(head, self.options.weight_decay), lr=self.options.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lambda step: _lr_factor(step, self.total, warmup))
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
        _set_rng_state(state["rng"])
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
            with self._autocast():
                with torch.no_grad():
                    features, grid = self.network.encoder(image)
                raw = self.head(features, grid)
            pred = activate_for_training(raw.to(self.exact), self.config.activation, self.config.output_floor,
                                         self.config.max_depth)
            pred = resize_map(pred, tuple(target.shape[-2:]), self.config)
            terms = (silog_loss(pred, target, valid, self.config.max_depth) if self.config.metric
                     else depth_loss(pred, target, valid))
            self.scaler.scale(terms.total / self.options.grad_accum).backward()
        losses = torch.stack([terms.total, terms.regression, terms.gradient]).detach() / self.options.grad_accum
        floor = torch.stack([at_floor(raw, self.config.activation), torch.tensor(raw.numel(), device=raw.device)]).to(self.exact)
        return torch.cat([losses, floor])

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
            abs_rel, delta1, failures = _validate(self.network, self.data.val, self.crop, self.device, self.dtype,
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
            run.save_last(self.folder, {
                "step": self.step, "arch": self.config.to_dict(), "head": self.network.head.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": _rng_state(), "settings": settings(self.options),
                "world_size": self.world.size,
            })
        self.saved = self.step

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


def _train(options: TrainOptions, world: World, device: torch.device, reporter: Reporter) -> TrainSummary:
    start = _resume(options, reporter) if options.resume else _begin(options, world)
    return _Run(start, world, device, reporter).run()
