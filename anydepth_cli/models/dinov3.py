"""The DINOv3 ViT (patch 16, 4 storage tokens, 2-D rotary position embedding)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.tracing import is_exporting
from anydepth_cli.models.vit import RotaryFn, ViTEncoder

STORAGE_TOKENS = 4


class RopeEmbed(nn.Module):
    """2-D rotary embedding over normalised patch-centre coordinates; `periods` come from the checkpoint."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("periods", torch.ones(head_dim // 4))
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def sin_cos(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sin and cos tables of shape (h·w, head_dim) for an h×w grid."""
        periods = self.periods
        key = (h, w, periods.device, periods._version)
        exporting = is_exporting()
        cached = None if exporting else self._cache.get(key)
        if cached is not None:
            return cached
        rows = (torch.arange(h, device=periods.device, dtype=torch.float32) + 0.5) / h
        cols = (torch.arange(w, device=periods.device, dtype=torch.float32) + 0.5) / w
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(h * w, 2)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / periods.float()[None, None, :]
        angles = angles.flatten(1).tile(2)
        result = (torch.sin(angles), torch.cos(angles))
        if not exporting:
            self._cache = {key: result}
        return result


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class DinoV3Encoder(ViTEncoder):
    """ViT whose patch tokens carry rotary positions; the cls and storage tokens are not rotated."""

    prefix_tokens = 1 + STORAGE_TOKENS

    def __init__(self, dim: int, depth: int, heads: int, layers: tuple[int, ...], apply_norm: bool) -> None:
        super().__init__(dim, depth, heads, layers, apply_norm, patch=16, eps=1e-5, key_bias_mask=True)
        self.storage_tokens = nn.Parameter(torch.zeros(1, STORAGE_TOKENS, dim))
        self.rope_embed = RopeEmbed(dim // heads)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, RotaryFn | None, tuple[int, int]]:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % 16, -width % 16
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = x.shape[-2] // 16, x.shape[-1] // 16
        batch = x.shape[0]
        tokens = torch.cat(
            [self.cls_token.expand(batch, -1, -1), self.storage_tokens.expand(batch, -1, -1), self.patch_embed(x)],
            dim=1,
        )
        sin, cos = self.rope_embed.sin_cos(h, w)
        prefix = self.prefix_tokens

        def rotary(t: torch.Tensor) -> torch.Tensor:
            head, patches = t[..., :prefix, :], t[..., prefix:, :]
            s, c = sin.to(t.dtype), cos.to(t.dtype)
            return torch.cat([head, patches * c + rotate_half(patches) * s], dim=-2)

        return tokens, rotary, (h, w)
