"""VGGT's depth head (facebookresearch/vggt `DPTHead`, `depth_head.*`): Depth Anything V2's DPT on LayerNorm-ed
tokens, with sine-cosine positions of the view plane added after each projection and before the output convs, no
skip unit in the coarsest fusion block, and `outputs` channels without an activation (VGGT's own: 2, depth and
confidence)."""

from __future__ import annotations

import torch
from torch import nn

from anydepth_cli.models.dpt import DPTHead, Scratch

POSITION_FREQUENCY = 100.0
POSITION_SCALE = 0.1


def view_plane_uv(h: int, w: int, aspect: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(h, w, 2) pixel-centre coordinates (u, v) on a plane whose diagonal spans 2, `aspect` = width / height."""
    span_u = aspect / (1 + aspect**2) ** 0.5
    span_v = 1 / (1 + aspect**2) ** 0.5
    u = torch.linspace(-span_u * (w - 1) / w, span_u * (w - 1) / w, w, dtype=dtype, device=device)
    v = torch.linspace(-span_v * (h - 1) / h, span_v * (h - 1) / h, h, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)


def sincos(values: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, channels): sines then cosines of `values` at frequencies POSITION_FREQUENCY ** (−i / (channels / 2)),
    computed in float64."""
    steps = torch.arange(channels // 2, dtype=torch.float64, device=values.device) / (channels / 2)
    angles = values.reshape(-1, 1).double() * (1.0 / POSITION_FREQUENCY**steps)[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def add_positions(x: torch.Tensor, aspect: float) -> torch.Tensor:
    """`x` (B, C, h, w) plus POSITION_SCALE × the sine-cosine embedding of its view-plane coordinates, u's in the
    first C/2 channels and v's in the others."""
    h, w, channels = x.shape[-2], x.shape[-1], x.shape[1]
    uv = view_plane_uv(h, w, aspect, x.dtype, x.device).reshape(-1, 2)
    table = torch.cat([sincos(uv[:, 0], channels // 2), sincos(uv[:, 1], channels // 2)], dim=-1)
    return x + (POSITION_SCALE * table).reshape(h, w, channels).permute(2, 0, 1)[None].to(x.dtype)


class DPTVGGTHead(DPTHead):
    """VGGT's DPT head: keys as VGGT's `depth_head.*` names them."""

    def __init__(self, dim: int, features: int, out_channels: tuple[int, ...], outputs: int) -> None:
        super().__init__(dim, features, out_channels, cls=False)
        self.norm = nn.LayerNorm(dim)
        self.scratch = Scratch(out_channels, features, outputs=outputs, vggt=True)

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]], grid: tuple[int, int]) -> torch.Tensor:
        return super().forward([(self.norm(tokens), cls) for tokens, cls in features], grid)

    def projected(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return add_positions(self.projects[i](x), x.shape[-1] / x.shape[-2])

    def placed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return add_positions(x, grid[1] / grid[0])
