"""The training loop: a frozen encoder, a trained head, AdamW with warmup and cosine decay, checkpoints.

The whole network stays in eval mode: the encoder is frozen (no gradients, run under `torch.no_grad`) and the
head's BatchNorm layers use their stored statistics, so a sample's gradient does not depend on the others in
its batch. Batch size, gradient accumulation and the number of processes then trade freely: 2 processes of
batch B/2 give the weights of 1 process of batch B.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.errors import TrainingError, UsageError
from anydepth_cli.datasets.generic import Pair
from anydepth_cli.evaluation.runner import run_eval
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.inference.predictor import PRECISIONS as INFERENCE_PRECISIONS
from anydepth_cli.inference.predictor import DepthPredictor, select_device, select_dtype
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.models.registry import DEFAULT_MODEL, get_model
from anydepth_cli.training import distributed, run
from anydepth_cli.training.data import batches_per_epoch, make_loader
from anydepth_cli.training.distributed import World
from anydepth_cli.training.loss import depth_loss
from anydepth_cli.training.report import Reporter, TrainSummary
from anydepth_cli.training.sources import load_sources, parse_values, training_data, write_data_lists
from anydepth_cli.weights.checkpoint import load_encoder_weights, load_network
from anydepth_cli.weights.choice import choose_weights, weights_path

TARGETS = ("depth", "disparity")
TARGET_ACTIVATIONS = {"depth": "relu+0.001", "disparity": "relu"}
"""The final activation trained for each target: AnyDepth's ReLU + 0.001 for depth, Depth Anything's ReLU for disparity."""
PRECISIONS = (*INFERENCE_PRECISIONS, "fp64")
"""fp64 is a reference mode: it shows that runs which differ only in float rounding agree."""
RESUMED = ("data", "target", "val", "val_every", "steps", "epochs", "batch_size", "grad_accum", "lr", "weight_decay",
           "warmup", "input_size", "seed", "keep", "depth_scale", "save_every", "clip_grad", "data_root", "mix",
           "max_depth")
"""The options a run stores; `--resume` reuses them unless they are given again."""
WARMUP_FRACTION = 0.05
FRESH_OUTPUT_BIAS = 1.0
"""A fresh head's last bias, so that its first outputs sit above the final ReLU and every pixel gets a gradient."""


@dataclass(frozen=True)
class TrainOptions:
    """What `anydepth train` was asked to do (the command-line options)."""

    data: tuple[Path, ...]
    output: Path
    model: str | None = None
    arch: Path | None = None
    checkpoint: str | None = None
    encoder_weights: Path | None = None
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
    explicit: frozenset[str] = frozenset()
    """The fields given on the command line; when resuming, the others are the run's own (RESUMED)."""

    def check(self) -> None:
        """UsageError for any option out of range or in conflict with another."""
        problems = []
        if self.target is not None and self.target not in TARGETS:
            problems.append(f"--target must be depth or disparity, not {self.target!r}")
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
                parse_values(text, option, finite)
            except UsageError as exc:
                problems.append(str(exc))
        if self.model is not None and self.arch is not None:
            problems.append("pass either --model or --arch, not both")
        if self.encoder_weights is not None and self.checkpoint is not None:
            problems.append("--encoder-weights starts a fresh head: it cannot be combined with --checkpoint")
        if self.arch is not None and self.checkpoint is None and self.encoder_weights is None and not self.resume:
            problems.append("--arch needs --checkpoint FILE (a whole network) or --encoder-weights FILE (a backbone)")
        if problems:
            raise UsageError("; ".join(problems))


def training_config(config: NetworkConfig, target: str) -> NetworkConfig:
    """`config` as trained for `target`: its output kind and final activation, in the training layout."""
    return replace(config, output=target, activation=TARGET_ACTIVATIONS[target], layout=run.TRAIN_LAYOUT)


def _named_config(options: TrainOptions, target: str) -> NetworkConfig:
    """The architecture --arch or --model names (the default model's when neither), trained for `target`."""
    if options.arch is not None:
        return training_config(NetworkConfig.from_file(options.arch), target)
    return training_config(get_model(options.model or DEFAULT_MODEL).config, target)


def fresh_network(config: NetworkConfig, encoder_weights: Path, seed: int) -> DepthNetwork:
    """A network of `config` whose encoder comes from a backbone state dict and whose head is newly initialised."""
    torch.manual_seed(seed)
    network = DepthNetwork(config)
    load_encoder_weights(network, encoder_weights)
    last = [m for m in network.head.modules() if isinstance(m, nn.Conv2d)][-1]
    nn.init.constant_(last.bias, FRESH_OUTPUT_BIAS)
    return network.eval()


def _start_network(options: TrainOptions, config: NetworkConfig, world: World) -> DepthNetwork:
    """The network training starts from: a registry model or checkpoint, or a backbone with a fresh head."""
    if options.encoder_weights is not None:
        return fresh_network(config, options.encoder_weights, options.seed)
    choice = choose_weights(options.model, options.checkpoint, options.arch)
    if world.main:  # one process downloads; the others then find the file in the cache
        path = weights_path(choice)
    distributed.barrier(world)
    if not world.main:
        path = weights_path(choice)
    return load_network(config, path)


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
    named = _named_config(options, target) if options.model or options.arch else training_config(stored, target)
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


def _validate(network: DepthNetwork, pairs: list[Pair], size: int, device: torch.device, dtype: torch.dtype,
              options: TrainOptions) -> tuple[float, float]:
    """Mean AbsRel and δ1 of the network on the validation pairs, aligned in its own space (as `anydepth eval`).

    An fp64 network is validated through an fp32 copy.
    """
    if dtype == torch.float64:
        network, dtype = copy.deepcopy(network).float(), torch.float32
    predictor = DepthPredictor(network, size, device, dtype, options.batch_size)
    result = run_eval(pairs, {"model": predictor}, get_preset("default"), depth_scale=options.depth_scale,
                      batch_size=options.batch_size)
    return result.aggregates["model"]["abs_rel"], result.aggregates["model"]["delta1"]


def train(options: TrainOptions, reporter: Reporter) -> TrainSummary:
    """Run (or resume) the training `options` describe, in this process's place among the launcher's processes.

    Only rank 0 writes files and talks to `reporter`. TrainingError on a non-finite loss or when memory runs
    out; the last checkpoint in the run folder is then the last good one.
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
    folder = options.output
    state = None
    if options.resume:
        state = run.load_last(folder)
        options, changed = _resumed_options(options, state["settings"])
        if changed:
            reporter.note(f"resuming with another {', '.join(changed)}: the result will differ from an uninterrupted run")
        config = _resumed_config(state, options)
        network = load_network(config, folder / run.MODEL)
        network.head.load_state_dict(state["head"])
    else:
        if (folder / run.LAST).exists():
            raise UsageError(f"{folder} already holds a training run: continue it with --resume {folder} "
                             "or choose another -o")
        config = _named_config(options, options.target or "depth")
        network = _start_network(options, config, world)
    network = network.to(device).eval()
    network.encoder.requires_grad_(False)
    crop = crop_size(options, config)
    if world.main and options.input_size and crop != options.input_size:
        reporter.note(f"--input-size {options.input_size} rounded to {crop}, a multiple of the patch size {config.patch_size}")

    report = training_data(options.data, world, reporter, roots=options.data_root, mix=options.mix, keep=options.keep,
                           depth_scale=options.depth_scale, max_depth=options.max_depth, workers=max(1, options.workers))
    val_pairs = load_sources(options.val)
    count = len(report.samples)
    per_epoch = batches_per_epoch(count, options.batch_size, world)
    if per_epoch < options.grad_accum:
        raise UsageError(f"{count} sample(s) cannot fill one step of {options.batch_size * options.grad_accum * world.size} "
                         "images: lower --batch-size or --grad-accum, or add data")
    limits = [options.steps, options.epochs and max(1, options.epochs * per_epoch // options.grad_accum)]
    total = min(s for s in limits if s)
    warmup = round(WARMUP_FRACTION * total) if options.warmup is None else options.warmup

    dtype = torch.float64 if options.precision == "fp64" else select_dtype(options.precision, device)
    exact = torch.float64 if dtype == torch.float64 else torch.float32  # of the weights, inputs and loss
    network.to(exact)
    autocast = nullcontext if dtype == exact else lambda: torch.autocast(device.type, dtype=dtype)
    head: nn.Module = network.head
    parameters = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(head, options.weight_decay), lr=options.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, total, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    start = 0
    rows: list[dict[str, float]] = []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
        rows = run.read_metrics(folder, start) if world.main else []
        if state["world_size"] != world.size:
            reporter.note(f"resuming on {world.size} process(es) instead of {state['world_size']}: the global batch "
                          "changes with them")
    if world.distributed:
        head = nn.parallel.DistributedDataParallel(head, device_ids=[device.index] if device.type == "cuda" else None)
    if world.main:
        run.write_arch(folder, config)
        write_data_lists(folder, report)

    loader = make_loader(report, crop, config.output, options.seed, options.batch_size, world,
                         start * options.grad_accum, options.workers, device.type == "cuda")
    stream = iter(loader)
    images_per_step = options.batch_size * options.grad_accum * world.size
    failures: set[str] = set()
    saved = start
    loss_value = math.nan

    def save(step: int) -> None:
        nonlocal saved
        if world.main:
            run.save_model(folder, network)
            run.save_last(folder, {
                "step": step, "arch": config.to_dict(), "head": network.head.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": _rng_state(), "settings": settings(options), "world_size": world.size,
            })
            run.write_metrics(folder, rows)
            run.plot_losses(folder, rows)
        saved = step

    reporter.start(total, start, images_per_step)
    began = time.perf_counter()
    step = start
    try:
        while step < total:
            tick = time.perf_counter()
            sums = torch.zeros(3, device=device, dtype=exact)
            for micro in range(options.grad_accum):
                batch = next(stream)
                failures.update(e for e in batch["error"] if e)
                image = batch["image"].to(device, exact, non_blocking=True)
                target = batch["target"].to(device, exact, non_blocking=True)
                valid = batch["valid"].to(device, non_blocking=True)
                last = micro == options.grad_accum - 1
                with nullcontext() if last or head is network.head else head.no_sync():
                    with autocast():
                        with torch.no_grad():
                            features, grid = network.encoder(image)
                        raw = head(features, grid)
                    pred = network.activate(raw.to(exact))
                    pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                    terms = depth_loss(pred, target, valid)
                    scaler.scale(terms.total / options.grad_accum).backward()
                sums += torch.stack([terms.total, terms.ssi, terms.gradient]).detach() / options.grad_accum
            sums = distributed.mean(world, sums)
            loss_value = float(sums[0])
            if not math.isfinite(loss_value):
                raise TrainingError(f"the loss became non-finite at step {step + 1}; stopped. "
                                    + (f"The last good checkpoint (step {saved}) is in {folder}"
                                       if saved else "No checkpoint was written yet")
                                    + "; try a lower --lr")
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, options.clip_grad)
            lr = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            row: dict[str, float] = {"step": step, "loss": loss_value, "lr": lr, "val_abs_rel": math.nan,
                                     "val_delta1": math.nan}
            rows.append(row)
            reporter.step(step, loss_value, lr, images_per_step / max(time.perf_counter() - tick, 1e-9))
            if val_pairs and (step % options.val_every == 0 or step == total):
                if world.main:
                    abs_rel, delta1 = _validate(network, val_pairs, crop, device, dtype, options)
                    row.update(val_abs_rel=abs_rel, val_delta1=delta1)
                    reporter.validated(step, abs_rel, delta1)
                distributed.barrier(world)
            if step % options.save_every == 0 or step == total or not math.isnan(row["val_abs_rel"]):
                save(step)
    except (torch.cuda.OutOfMemoryError, MemoryError):
        raise TrainingError(f"out of memory at step {step + 1} with batch size {options.batch_size} and input size "
                            f"{crop}: lower --batch-size (raise --grad-accum to keep the batch) or --input-size") from None
    except KeyboardInterrupt:
        reporter.note(f"interrupted at step {step}; the last checkpoint (step {saved}) is in {folder}: "
                      f"continue with --resume {folder}")
        raise
    finally:
        reporter.stop()
    validated = [(int(r["step"]), r["val_abs_rel"], r["val_delta1"]) for r in rows if not math.isnan(r["val_abs_rel"])]
    best = min(validated, key=lambda v: v[1], default=None)
    return TrainSummary(folder, step - start, start, total, time.perf_counter() - began,
                        (step - start) * images_per_step, loss_value, report, best, sorted(failures))
