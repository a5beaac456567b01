"""Transformer blocks shared by the DINOv2 and DINOv3 encoders."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

RotaryFn = Callable[[torch.Tensor], torch.Tensor]


class LayerScale(nn.Module):
    """Per-channel learned scale (`gamma`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    With `key_bias_mask`, a stored `bias_mask` buffer multiplies the qkv bias (DINOv3); with `qk_norm_eps`, each
    head's queries and keys pass through their own LayerNorm (`q_norm`, `k_norm`) before the rotary map (VGGT).
    """

    def __init__(self, dim: int, heads: int, key_bias_mask: bool = False, qk_norm_eps: float | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        if key_bias_mask:
            self.qkv.register_buffer("bias_mask", torch.ones(dim * 3))
        if qk_norm_eps is not None:
            self.q_norm = nn.LayerNorm(dim // heads, eps=qk_norm_eps)
            self.k_norm = nn.LayerNorm(dim // heads, eps=qk_norm_eps)

    def project_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """The fused q, k, v projection (B, N, 3C), with the key bias masked where the layout stores a mask."""
        mask = getattr(self.qkv, "bias_mask", None)
        if mask is None:
            return self.qkv(x)
        return F.linear(x, self.qkv.weight, self.qkv.bias * mask)

    def attend(self, x: torch.Tensor, rotary: RotaryFn | None = None) -> torch.Tensor:
        """The heads' attention outputs, joined (B, N, C): everything before the output projection."""
        b, n, c = x.shape
        qkv = self.project_qkv(x).view(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = rotary(q), rotary(k)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, n, c)

    def forward(self, x: torch.Tensor, rotary: RotaryFn | None = None) -> torch.Tensor:
        return self.proj(self.attend(x, rotary))


class Mlp(nn.Module):
    """fc1 → GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches (and, with `qk_norm`, LayerNorms of the
    same `eps` on each head's queries and keys)."""

    def __init__(self, dim: int, heads: int, eps: float, key_bias_mask: bool = False, qk_norm: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, key_bias_mask, eps if qk_norm else None)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, dim * 4)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, rotary: RotaryFn | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rotary))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens (`proj` conv with kernel = stride = patch)."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTEncoder(nn.Module):
    """What both encoder layouts share: blocks, final norm and the tapped layers.

    `forward` returns, for each tapped block, the patch tokens (B, h·w, C) and the cls token
    (B, C), plus the patch grid (h, w).
    """

    prefix_tokens: int = 1

    def __init__(self, dim: int, depth: int, heads: int, layers: tuple[int, ...], apply_norm: bool,
                 patch: int, eps: float, key_bias_mask: bool = False) -> None:
        super().__init__()
        self.patch_size = patch
        self.layers = tuple(layers)
        self.apply_norm = apply_norm
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, eps, key_bias_mask) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, RotaryFn | None, tuple[int, int]]:
        """Input image → token sequence, the rotary map (if any) and the patch grid."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple[int, int]]:
        x, rotary, grid = self.tokens(x)
        taps = {}
        for index, block in enumerate(self.blocks[: max(self.layers) + 1]):
            x = block(x, rotary)
            if index in self.layers:
                y = self.norm(x) if self.apply_norm else x
                taps[index] = (y[:, self.prefix_tokens:], y[:, 0])
        return [taps[i] for i in self.layers], grid
