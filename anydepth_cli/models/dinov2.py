"""The DINOv2-layout ViT (patch 14, learned 37×37 position table), as in Depth Anything V2 and 3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.vit import RotaryFn, ViTEncoder

TRAINED_GRID = 37


class DinoV2Encoder(ViTEncoder):
    """ViT with a learned position table trained on a 37×37 patch grid (518 px)."""

    def __init__(self, dim: int, depth: int, heads: int, layers: tuple[int, ...], apply_norm: bool) -> None:
        super().__init__(dim, depth, heads, layers, apply_norm, patch=14, eps=1e-6)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TRAINED_GRID * TRAINED_GRID, dim))
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def position_table(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an h×w patch grid: the stored table resampled bicubically."""
        table = self.pos_embed
        if (h, w) == (TRAINED_GRID, TRAINED_GRID):
            return table
        key = (h, w, table.device, table.dtype, table._version)
        cached = self._pos_cache.get(key)
        if cached is not None and not torch.is_grad_enabled():
            return cached
        grid = table[:, 1:].float().reshape(1, TRAINED_GRID, TRAINED_GRID, -1).permute(0, 3, 1, 2)
        # The trained numbers come from a scale factor of (n + 0.1) / 37, not from an output size.
        scale = ((h + 0.1) / TRAINED_GRID, (w + 0.1) / TRAINED_GRID)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False)
        if grid.shape[-2:] != (h, w):
            raise RuntimeError(f"position table resampled to {tuple(grid.shape[-2:])}, expected {(h, w)}")
        patches = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(table.dtype)
        result = torch.cat([table[:, :1], patches], dim=1)
        if not torch.is_grad_enabled():
            self._pos_cache = {key: result}
        return result

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, RotaryFn | None, tuple[int, int]]:
        height, width = x.shape[-2:]
        if height % 14 or width % 14:
            raise ValueError(f"input sides must be multiples of 14, got {height}×{width}")
        h, w = height // 14, width // 14
        patches = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)
        return tokens + self.position_table(h, w), None, (h, w)
