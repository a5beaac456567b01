"""The DPT head in the Depth Anything V2 layout (the baseline SDT is compared against)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.readout import apply_readout, readout_projects


class ResidualConvUnit(nn.Module):
    """ReLU → 3×3 conv → ReLU → 3×3 conv, plus the input; with `relu_skip`, plus the input after the ReLU (VGGT's
    units run an in-place ReLU on their input before adding it)."""

    def __init__(self, features: int, relu_skip: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.relu_skip = relu_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(x)
        return (activated if self.relu_skip else x) + self.conv2(F.relu(self.conv1(activated)))


class FusionBlock(nn.Module):
    """Adds a refined skip input, refines, resizes (to `size` or ×2) and mixes with a 1×1 conv; without
    `skip_unit` (VGGT's coarsest block) it holds no unit for a skip input; `relu_skip` as in ResidualConvUnit."""

    def __init__(self, features: int, skip_unit: bool = True, relu_skip: bool = False) -> None:
        super().__init__()
        if skip_unit:
            self.resConfUnit1 = ResidualConvUnit(features, relu_skip)
        self.resConfUnit2 = ResidualConvUnit(features, relu_skip)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size or (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


class Scratch(nn.Module):
    """Per-level 3×3 convs to `features`, the four fusion blocks and the output convs: to one channel behind a ReLU
    (Depth Anything V2), or to `outputs` channels with no activation, no skip unit in the coarsest fusion block and
    residual units adding their activated input (VGGT, `vggt=True`)."""

    def __init__(self, out_channels: tuple[int, ...], features: int, final_relu: bool = True, outputs: int = 1,
                 vggt: bool = False) -> None:
        super().__init__()
        for i, channels in enumerate(out_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(channels, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FusionBlock(features, skip_unit=not (vggt and i == 4), relu_skip=vggt))
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        # Metric models end in the network's sigmoid instead of the ReLU.
        last = [nn.Conv2d(32, outputs, 1)] if vggt else [nn.Conv2d(32, 1, 1), nn.ReLU() if final_relu else nn.Identity()]
        self.output_conv2 = nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), *last)


class DPTHead(nn.Module):
    """Reassemble four layers at 4 scales, fuse them coarse to fine, regress one channel at 14·(h, w)."""

    memory_format = torch.contiguous_format

    def __init__(self, dim: int, features: int, out_channels: tuple[int, ...], cls: bool, patch: int = 14,
                 final_relu: bool = True) -> None:
        super().__init__()
        self.patch = patch
        self.projects = nn.ModuleList(nn.Conv2d(dim, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
        ])
        if cls:
            self.readout_projects = readout_projects(dim)
        self.scratch = Scratch(out_channels, features, final_relu)

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]], grid: tuple[int, int]) -> torch.Tensor:
        levels = []
        for i, (tokens, cls) in enumerate(features):
            if hasattr(self, "readout_projects"):
                tokens = apply_readout(self.readout_projects[i], tokens, cls)
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).contiguous(memory_format=self.memory_format)
            x = self.resize_layers[i](self.projected(i, x))
            levels.append(getattr(self.scratch, f"layer{i + 1}_rn")(x))
        s = self.scratch
        path = s.refinenet4(levels[3], size=levels[2].shape[-2:])
        path = s.refinenet3(path, levels[2], size=levels[1].shape[-2:])
        path = s.refinenet2(path, levels[1], size=levels[0].shape[-2:])
        path = s.refinenet1(path, levels[0])
        out = s.output_conv1(path)
        out = F.interpolate(out, size=(grid[0] * self.patch, grid[1] * self.patch), mode="bilinear", align_corners=True)
        return s.output_conv2(self.placed(out, grid))

    def projected(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer `i`'s patch map (B, C, h, w) projected to its level's channels."""
        return self.projects[i](x)

    def placed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The upsampled map before the output convs (as it is here; VGGT's adds positions)."""
        return x
