"""Where a run starts: a new run's network (a registry model, a checkpoint, or a backbone with a fresh head), or a
resumed run's network and stored state, with the options each resolves; and the RNG states a run stores."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from anydepth_cli.errors import UsageError
from anydepth_cli.inference.memory import require_weights_memory
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.models.registry import get_encoder
from anydepth_cli.training import distributed, run
from anydepth_cli.training.distributed import World
from anydepth_cli.training.loss import TARGET_MIDDLE
from anydepth_cli.training.options import (TrainOptions, resumed_config, resumed_options, source_config,
                                           training_config)
from anydepth_cli.training.report import Reporter
from anydepth_cli.training.sources import metric_range
from anydepth_cli.weights.checkpoint import load_encoder_weights, load_network
from anydepth_cli.weights.choice import choose_weights, encoder_weights_path, weights_path


@dataclass
class Start:
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


def resume_run(options: TrainOptions, reporter: Reporter) -> Start:
    """The run in options.output, as it was last saved, with its own settings unless given again."""
    state = run.load_last(options.output)
    options, changed = resumed_options(options, state["settings"])
    if changed:
        reporter.note(f"resuming with another {', '.join(changed)}: the result will differ from an uninterrupted run")
    config = resumed_config(state, options)
    require_weights_memory(config)
    network = load_network(config, options.output / run.MODEL)
    network.head.load_state_dict(state["head"])
    options = replace(options, target=config.output, batchnorm=options.batchnorm or "frozen")
    return Start(options, config, network, state)


def begin_run(options: TrainOptions, world: World) -> Start:
    """A new run in options.output: UsageError when that folder already holds one."""
    if (options.output / run.LAST).exists():
        raise UsageError(f"{options.output} already holds a training run: continue it with --resume {options.output} "
                         "or choose another -o")
    if options.encoder is not None:
        options = replace(options, encoder_weights=get_encoder(options.encoder).reference)
    fresh = options.encoder_weights is not None
    source = source_config(options)
    options = replace(options, target=options.target or "depth",
                      batchnorm=options.batchnorm or ("train" if fresh else "frozen"))
    config = training_config(source, options.target, metric_range(options.max_depth))
    require_weights_memory(config)
    network = _start_network(options, config, world)
    return Start(options, config, network, declared=None if fresh else source.output)


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


def rng_state() -> dict[str, Any]:
    """The CPU's and, where there is one, the GPUs' random-number generator states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states `rng_state` took."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
