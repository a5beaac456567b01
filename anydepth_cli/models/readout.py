"""The cls-token readout both heads can use: concatenate [patch, cls] and project back to C."""

from __future__ import annotations

import torch
from torch import nn


def readout_projects(dim: int) -> nn.ModuleList:
    """Four `Linear(2C → C) + GELU` projections, one per tapped layer."""
    return nn.ModuleList(nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU()) for _ in range(4))


def apply_readout(project: nn.Module, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Patch tokens (B, N, C) joined with their layer's cls token (B, C) and projected to (B, N, C)."""
    return project(torch.cat([tokens, cls.unsqueeze(1).expand_as(tokens)], dim=-1))
