"""The DINOv2-layout ViT (patch 14, learned 37×37 position table), as in Depth Anything V2 and 3."""

from __future__ import annotations

import torch
from torch import nn

from anydepth_cli.models.tracing import is_exporting
from anydepth_cli.models.vit import RotaryFn, ViTEncoder

TRAINED_GRID = 37
CUBIC_A = -0.75


def cubic_taps(size: int | torch.SymInt, inverse_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights, each (size, 4), with which PyTorch's bicubic interpolation by a scale factor of
    1 / `inverse_scale` resamples the trained grid along one axis: half-pixel centres, A = −0.75, edge taps clamped."""
    positions = torch.arange(size, device=inverse_scale.device, dtype=torch.float32)
    source = (positions + 0.5) * inverse_scale - 0.5
    start = torch.floor(source)
    t = (source - start)[:, None]
    a = CUBIC_A
    near = torch.cat([t, 1 - t], dim=1)  # distances to the two inner taps
    far = near + 1  # and to the two outer ones
    near_weights = ((a + 2) * near - (a + 3)) * near * near + 1
    far_weights = ((a * far - 5 * a) * far + 8 * a) * far - 4 * a
    weights = torch.stack([far_weights[:, 0], near_weights[:, 0], near_weights[:, 1], far_weights[:, 1]], dim=1)
    offsets = torch.arange(-1, 3, device=inverse_scale.device)
    return (start.long()[:, None] + offsets).clamp(0, TRAINED_GRID - 1), weights


class DinoV2Encoder(ViTEncoder):
    """ViT with a learned position table trained on a 37×37 patch grid (518 px)."""

    def __init__(self, dim: int, depth: int, heads: int, layers: tuple[int, ...], apply_norm: bool) -> None:
        super().__init__(dim, depth, heads, layers, apply_norm, patch=14, eps=1e-6)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TRAINED_GRID * TRAINED_GRID, dim))
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def position_table(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an h×w patch grid: the stored table resampled bicubically."""
        table = self.pos_embed
        caching = not torch.is_grad_enabled() and not is_exporting()
        key = (h, w, table.device, table.dtype, table._version)
        cached = self._pos_cache.get(key) if caching else None
        if cached is not None:
            return cached
        # The trained numbers come from a scale factor of (n + 0.1) / 37, not from an output size; on the trained
        # grid itself the table is used as stored (a scale of 1). The sides are read from tensors, not Python ints,
        # so an exported graph keeps this for every grid. 370 / (10 n + 1) is 37 / (n + 0.1) rounded once.
        rows = torch.arange(h, device=table.device, dtype=torch.float32)
        cols = torch.arange(w, device=table.device, dtype=torch.float32)
        height, width = rows[-1] + 1, cols[-1] + 1
        stretch = ((height != TRAINED_GRID) | (width != TRAINED_GRID)).float()
        grid = table[0, 1:].float().reshape(TRAINED_GRID, TRAINED_GRID, -1)
        # Along the width, then the height, as PyTorch does; gathers and sums, which no autocast lowers.
        taps, weights = cubic_taps(w, 10 * TRAINED_GRID / (10 * width + stretch))
        grid = (grid[:, taps] * weights[None, :, :, None]).sum(dim=2)
        taps, weights = cubic_taps(h, 10 * TRAINED_GRID / (10 * height + stretch))
        patches = (grid[taps] * weights[:, :, None, None]).sum(dim=1)
        result = torch.cat([table[:, :1], patches.reshape(1, h * w, -1).to(table.dtype)], dim=1)
        if caching:
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
