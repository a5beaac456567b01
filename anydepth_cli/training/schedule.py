"""How long a run trains and how its optimiser steps: the total and warmup steps, the learning-rate schedule
(linear warmup, then cosine decay) and which head parameters take weight decay."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from anydepth_cli.training.options import TrainOptions

WARMUP_FRACTION = 0.05


def total_steps(options: TrainOptions, per_epoch: int) -> tuple[int, int]:
    """(steps, warmup steps) of the whole run."""
    limits = [options.steps, options.epochs and max(1, options.epochs * per_epoch // options.grad_accum)]
    total = min(s for s in limits if s)
    return total, round(WARMUP_FRACTION * total) if options.warmup is None else options.warmup


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(head: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the weight matrices and kernels; none on biases, norms and the fusion weights."""
    decay = [p for p in head.parameters() if p.ndim >= 2]
    plain = [p for p in head.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
