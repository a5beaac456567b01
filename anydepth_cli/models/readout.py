"""The cls-token readout both heads can use: concatenate [patch, cls] and project back to C."""

from __future__ import annotations

import torch
from torch import nn


class ReadoutProject(nn.Sequential):
    """`Linear(2C → C) + GELU` over each patch token joined with its layer's cls token."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Linear(2 * dim, dim), nn.GELU())

    def join(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, N, C) joined with the cls token (B, C) and projected to (B, N, C)."""
        return self(torch.cat([tokens, cls.unsqueeze(1).expand_as(tokens)], dim=-1))


def readout_projects(dim: int) -> nn.ModuleList:
    """Four readout projections, one per tapped layer."""
    return nn.ModuleList(ReadoutProject(dim) for _ in range(4))


def apply_readout(project: nn.Module, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Patch tokens (B, N, C) joined with their layer's cls token (B, C) by `project` and projected to (B, N, C)."""
    return project.join(tokens, cls)
