"""The Simple Depth Transformer head: weighted single-path fusion, DySample upsampling, refinement."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.readout import apply_readout, readout_projects
from anydepth_cli.models.tracing import is_exporting

GROUPS = 4
SCALE = 2


class DySample(nn.Module):
    """Learned ×2 point-sampling upsampler ("lp" style, 4 groups, dynamic scope)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        offsets = 2 * GROUPS * SCALE * SCALE
        self.offset = nn.Conv2d(channels, offsets, 1)
        self.scope = nn.Conv2d(channels, offsets, 1, bias=False)
        self.register_buffer("init_pos", torch.zeros(1, offsets, 1, 1))
        self._grid_cache: dict[tuple, torch.Tensor] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation: near-zero offsets, neutral scope, and `init_pos` at the centres of the
        2×2 sub-pixels (x offsets for every group, then y offsets)."""
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        nn.init.zeros_(self.scope.weight)
        step = (torch.arange(SCALE, dtype=torch.float32) - (SCALE - 1) / 2) / SCALE
        y, x = torch.meshgrid(step, step, indexing="ij")
        positions = torch.stack([x.flatten().repeat(GROUPS), y.flatten().repeat(GROUPS)])
        with torch.no_grad():
            self.init_pos.copy_(positions.reshape(1, -1, 1, 1))

    def _pixel_centres(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """(1, 2, 1, h, w): x then y pixel-centre coordinates."""
        exporting = is_exporting()
        key = (h, w, like.device, like.dtype)
        grid = None if exporting else self._grid_cache.get(key)
        if grid is None:
            ys = torch.arange(h, device=like.device, dtype=like.dtype) + 0.5
            xs = torch.arange(w, device=like.device, dtype=like.dtype) + 0.5
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0).view(1, 2, 1, h, w)
            if not exporting:
                self._grid_cache = {key: grid}  # the latest size only: many sizes must not grow it
        return grid

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 32, H, W): x then y offsets in input pixels of each group's 2×2 sub-pixels, from their centres."""
        return self.offset(x) * torch.sigmoid(self.scope(x)) * 0.5 + self.init_pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        offset = self.offsets(x)
        size = torch.tensor([w, h], device=x.device, dtype=x.dtype).view(1, 2, 1, 1, 1)
        coords = offset.view(b, 2, -1, h, w) + self._pixel_centres(h, w, x)
        coords = 2 * coords / size - 1
        coords = F.pixel_shuffle(coords.reshape(b, -1, h, w), SCALE)
        coords = coords.view(b, 2, GROUPS, SCALE * h, SCALE * w).permute(0, 2, 3, 4, 1).reshape(
            b * GROUPS, SCALE * h, SCALE * w, 2
        )
        out = F.grid_sample(  # in the positions' dtype, float32 also for a network cast to bf16
            x.reshape(b * GROUPS, c // GROUPS, h, w).to(coords.dtype), coords, mode="bilinear",
            padding_mode="border", align_corners=False,
        )
        return out.view(b, c, SCALE * h, SCALE * w).to(x.dtype)


def conv_bn_relu(channels: int, bias: bool) -> list[nn.Module]:
    return [nn.Conv2d(channels, channels, 3, padding=1, bias=bias), nn.BatchNorm2d(channels), nn.ReLU()]


class Upsample(nn.Module):
    """Two [DySample ×2, conv, BN, ReLU] stages: ×4 in all."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dysample1 = nn.Sequential(DySample(channels), *conv_bn_relu(channels, bias=False))
        self.dysample2 = nn.Sequential(DySample(channels), *conv_bn_relu(channels, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dysample2(self.dysample1(x))


class WeightedFusion(nn.Module):
    """Projects the four tapped layers to F channels and sums them with softmax weights."""

    def __init__(self, dim: int, fusion: int, cls: bool) -> None:
        super().__init__()
        self.layer_weights = nn.Parameter(torch.ones(4))
        self.projections = nn.ModuleList(nn.Sequential(nn.Linear(dim, fusion, bias=False), nn.GELU()) for _ in range(4))
        if cls:
            self.readout_projects = readout_projects(dim)

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        weights = torch.softmax(self.layer_weights, dim=0)
        fused = None
        for i, (tokens, cls) in enumerate(features):
            if hasattr(self, "readout_projects"):
                tokens = apply_readout(self.readout_projects[i], tokens, cls)
            term = self.projections[i](tokens) * weights[i]
            fused = term if fused is None else fused + term
        return fused


class DetailEnhancer(nn.Module):
    """Depthwise 3×3 conv → BN, added to the input, → ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.norm(self.dwconv(x)))


class SDTHead(nn.Module):
    """Fuse → reshape to the patch grid → (detail enhancer) → ×16 upsampling with refinement → 1 channel."""

    memory_format = torch.contiguous_format

    def __init__(self, dim: int, fusion: int, cls: bool, detail_enhancer: bool) -> None:
        super().__init__()
        self.weighted_fusion = WeightedFusion(dim, fusion, cls)
        if detail_enhancer:
            self.detail_enhancer = DetailEnhancer(fusion)
        self.upsample_1 = Upsample(fusion)
        self.refinement_1 = nn.Sequential(*conv_bn_relu(fusion, bias=True))
        self.upsample_2 = Upsample(fusion)
        self.refinement_2 = nn.Sequential(*conv_bn_relu(fusion, bias=True))
        self.output_conv = nn.Sequential(
            nn.Conv2d(fusion, fusion // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(fusion // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
        )

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]], grid: tuple[int, int]) -> torch.Tensor:
        fused = self.weighted_fusion(features)
        x = fused.transpose(1, 2).reshape(fused.shape[0], -1, *grid).contiguous(memory_format=self.memory_format)
        if hasattr(self, "detail_enhancer"):
            x = self.detail_enhancer(x)
        x = self.refinement_1(self.upsample_1(x))
        x = self.refinement_2(self.upsample_2(x))
        return self.output_conv(x)
