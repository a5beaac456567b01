"""VGGT's aggregator (facebookresearch/vggt) on one frame: a DINOv2 with registers embeds the patches, then pairs of
frame- and global-attention blocks with qk-norm and 2-D rotary positions; each tapped pair gives both outputs side
by side. Module names are VGGT's own, so its `aggregator.*` weights load as they are."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.dinov2 import TRAINED_GRID
from anydepth_cli.models.dinov3 import rotate_half
from anydepth_cli.models.vit import Block, PatchEmbed, RotaryFn

REGISTERS = 4
"""Register tokens of the patch encoder, and of the aggregator after its camera token."""
ROPE_FREQUENCY = 100.0
PATCH = 14


class RegisterDinoV2(nn.Module):
    """DINOv2 with registers as VGGT builds it: its position table resampled to the patch grid by antialiased bicubic
    interpolation to the grid's size (no 0.1 offset), LayerScale, the final norm on the patch tokens it returns."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(PATCH, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + TRAINED_GRID * TRAINED_GRID, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, REGISTERS, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, eps=1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_table(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings (1, 1 + h·w, C) of an h×w patch grid; the stored table on the trained grid."""
        if h == w == TRAINED_GRID:
            return self.pos_embed
        table = self.pos_embed.float()
        grid = table[:, 1:].reshape(1, TRAINED_GRID, TRAINED_GRID, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        patches = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([table[:, :1], patches], dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Normalised image (B, 3, H, W) → normed patch tokens (B, h·w, C)."""
        batch = x.shape[0]
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), self.patch_embed(x)], dim=1)
        tokens = tokens + self.position_table(*grid).to(tokens.dtype)
        tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(batch, -1, -1), tokens[:, 1:]], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + REGISTERS:]


def rope_tables(h: int, w: int, head_dim: int, prefix: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """sin and cos tables (prefix + h·w, head_dim) of VGGT's 2-D rotary embedding: patch (row, column) positions
    counted from 1, the prefix tokens at 0; the first half of each head rotated by rows, the second by columns,
    each half at frequencies ROPE_FREQUENCY ** (−2i / (head_dim / 2))."""
    half = head_dim // 2
    inverse = 1.0 / ROPE_FREQUENCY ** (torch.arange(0, half, 2, device=device).float() / half)
    rows = torch.arange(h, device=device).repeat_interleave(w) + 1
    cols = torch.arange(w, device=device).repeat(h) + 1
    zeros = torch.zeros(prefix, dtype=rows.dtype, device=device)
    angles = []
    for position in (torch.cat([zeros, rows]), torch.cat([zeros, cols])):
        axis = position.float()[:, None] * inverse[None, :]
        angles.append(torch.cat([axis, axis], dim=-1))
    angles = torch.cat(angles, dim=-1)
    return torch.sin(angles), torch.cos(angles)


def rotate_halves(x: torch.Tensor) -> torch.Tensor:
    """`rotate_half` within each half of the last dimension (the row half and the column half)."""
    rows, cols = x.chunk(2, dim=-1)
    return torch.cat([rotate_half(rows), rotate_half(cols)], dim=-1)


class VGGTEncoder(nn.Module):
    """VGGT's `Aggregator` for a single frame (S = 1), on an ImageNet-normalised image.

    `forward` returns, for each tapped block pair, the patch tokens (B, h·w, 2C) and the camera token (B, 2C) of the
    frame and global outputs concatenated, plus the patch grid (h, w).
    """

    prefix_tokens = 1 + REGISTERS

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        dim = config.embed
        self.layers = tuple(config.layers)
        self.head_dim = dim // config.heads
        self.patch_embed = RegisterDinoV2(*config.patch_encoder_size)
        self.frame_blocks = nn.ModuleList(Block(dim, config.heads, 1e-5, qk_norm=True) for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(Block(dim, config.heads, 1e-5, qk_norm=True) for _ in range(config.depth))
        # VGGT keeps one token set for the first frame and one for the others; a single photo is a first frame
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, REGISTERS, dim))

    def rotary(self, h: int, w: int, device: torch.device) -> RotaryFn:
        """The rotary map of an h×w patch grid."""
        sin, cos = rope_tables(h, w, self.head_dim, self.prefix_tokens, device)

        def apply(t: torch.Tensor) -> torch.Tensor:
            return t * cos.to(t.dtype) + rotate_halves(t) * sin.to(t.dtype)

        return apply

    def forward(self, x: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple[int, int]]:
        height, width = x.shape[-2:]
        if height % PATCH or width % PATCH:
            raise ValueError(f"input sides must be multiples of {PATCH}, got {height}×{width}")
        grid = (height // PATCH, width // PATCH)
        patches = self.patch_embed(x, grid)
        batch = x.shape[0]
        special = torch.cat([self.camera_token[:, 0], self.register_token[:, 0]], dim=1)
        tokens = torch.cat([special.expand(batch, -1, -1).to(patches.dtype), patches], dim=1)
        rotary = self.rotary(*grid, x.device)
        taps = {}
        for index in range(max(self.layers) + 1):
            frame = self.frame_blocks[index](tokens, rotary)
            tokens = self.global_blocks[index](frame, rotary)
            if index in self.layers:
                both = torch.cat([frame, tokens], dim=-1)
                taps[index] = (both[:, self.prefix_tokens:], both[:, 0])
        return [taps[i] for i in self.layers], grid
