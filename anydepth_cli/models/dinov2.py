"""The DINOv2-layout ViT (patch 14, learned 37×37 position table), as in Depth Anything V2 and 3."""

from __future__ import annotations

import torch
from torch import nn

from anydepth_cli.models.tracing import is_exporting
from anydepth_cli.models.vit import RotaryFn, ViTEncoder

TRAINED_GRID = 37
CUBIC_A = -0.75


def bicubic_matrix(positions: torch.Tensor, inverse_scale: torch.Tensor) -> torch.Tensor:
    """(n, 37) weights that resample the trained grid to output `positions` (0 … n − 1) as PyTorch's bicubic
    interpolation does with scale factor 1 / `inverse_scale`: half-pixel centres, A = −0.75, edge taps clamped."""
    source = (positions + 0.5) * inverse_scale - 0.5
    start = torch.floor(source)
    t = (source - start)[:, None]
    a = CUBIC_A
    near = torch.cat([t, 1 - t], dim=1)  # distances to the two inner taps
    far = near + 1  # and to the two outer ones
    near_weights = ((a + 2) * near - (a + 3)) * near * near + 1
    far_weights = ((a * far - 5 * a) * far + 8 * a) * far - 4 * a
    weights = torch.stack([far_weights[:, 0], near_weights[:, 0], near_weights[:, 1], far_weights[:, 1]], dim=1)
    taps = (start[:, None] + torch.arange(-1, 3, device=positions.device)).clamp(0, TRAINED_GRID - 1)
    source_index = torch.arange(TRAINED_GRID, device=positions.device, dtype=positions.dtype)
    return (weights[:, :, None] * (taps[:, :, None] == source_index).to(weights.dtype)).sum(dim=1)


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
        # grid itself the table is used as stored (a scale of 1). Sizes are read from tensors, not Python ints, so
        # an exported graph keeps this for every grid; float64 on the CPU keeps it exact under autocast.
        rows, cols = (torch.arange(n, dtype=torch.float64) for n in (h, w))
        height, width = rows[-1] + 1, cols[-1] + 1
        stretch = 0.1 * ((height != TRAINED_GRID) | (width != TRAINED_GRID)).double()
        grid = table[0, 1:].cpu().double().reshape(TRAINED_GRID, TRAINED_GRID, -1)
        patches = torch.einsum("hi,ijc,wj->hwc", bicubic_matrix(rows, TRAINED_GRID / (height + stretch)), grid,
                               bicubic_matrix(cols, TRAINED_GRID / (width + stretch)))
        result = torch.cat([table[:, :1], patches.reshape(1, h * w, -1).to(table.device, table.dtype)], dim=1)
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
