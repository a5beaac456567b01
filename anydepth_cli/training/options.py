"""What `anydepth train` was asked to do: the options, their checks, and what they decide before a run starts
(the trained architecture, the settings a run stores and `--resume` reuses, the crop size)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from anydepth_cli.errors import UsageError
from anydepth_cli.inference.precision import PRECISIONS as INFERENCE_PRECISIONS
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.registry import DEFAULT_MODEL, get_encoder, get_model
from anydepth_cli.training import run
from anydepth_cli.training.batchnorm import MODES as BATCHNORM_MODES
from anydepth_cli.training.sources import metric_range, parse_values

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


def source_config(options: TrainOptions) -> NetworkConfig:
    """The architecture --arch or --model names (the default model's when neither), as it declares itself."""
    if options.arch is not None:
        return NetworkConfig.from_file(options.arch)
    if options.encoder is not None:
        return get_encoder(options.encoder).config
    return get_model(options.model or DEFAULT_MODEL).config


def settings(options: TrainOptions) -> dict[str, Any]:
    """The RESUMED options as plain values (paths as strings), for last.pth."""
    values = {name: getattr(options, name) for name in RESUMED}
    return {name: [str(p) for p in value] if isinstance(value, tuple) else value for name, value in values.items()}


def resumed_options(options: TrainOptions, stored: dict[str, Any]) -> tuple[TrainOptions, list[str]]:
    """`options` with the run's stored settings for every RESUMED option not given again, and the names of those
    given again with another value."""
    restored = {name: tuple(Path(p) for p in value) if isinstance(value, list) else value for name, value in stored.items()}
    changed = [name for name, value in restored.items() if name in options.explicit and getattr(options, name) != value]
    kept = {name: value for name, value in restored.items() if name in RESUMED and name not in options.explicit}
    return replace(options, **kept), changed


def resumed_config(state: dict[str, Any], options: TrainOptions) -> NetworkConfig:
    """The architecture of the run being resumed; UsageError when --model, --arch or --target name another one."""
    stored = NetworkConfig.from_dict(state["arch"])
    target = options.target or stored.output
    named = training_config(source_config(options) if options.model or options.arch or options.encoder else stored,
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
