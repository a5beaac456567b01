"""DINOv3's DPT head in the AnyDepth training layout (`0.decoder.*`): the paper's DPT baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.readout import apply_readout, readout_projects


class ConvUnit(nn.Module):
    """A convolution stored under `.conv` (the reference wraps each in a ConvModule)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PreActResidual(nn.Module):
    """ReLU → 3×3 conv → ReLU → 3×3 conv (no biases), plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = ConvUnit(features, features, 3, bias=False)
        self.conv2 = ConvUnit(features, features, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds a refined skip (resized to the path's size), refines, doubles the size, mixes with a 1×1 conv."""

    def __init__(self, features: int, takes_skip: bool) -> None:
        super().__init__()
        if takes_skip:
            self.res_conv_unit1 = PreActResidual(features)
        self.res_conv_unit2 = PreActResidual(features)
        self.project = ConvUnit(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            if skip.shape[-2:] != x.shape[-2:]:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class Upsample2x(nn.Module):
    """Bilinear ×2 with aligned corners (a parameter-free slot of `conv_depth.head`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def resize_layer(index: int, channels: int) -> nn.Module:
    """×4, ×2, ×1 and ×½ for the four tapped layers, shallow to deep."""
    if index == 0:
        return nn.ConvTranspose2d(channels, channels, 4, stride=4)
    if index == 1:
        return nn.ConvTranspose2d(channels, channels, 2, stride=2)
    if index == 2:
        return nn.Identity()
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


class Reassemble(nn.Module):
    """Tokens of four layers → feature maps at four scales (readout, BatchNorm, 1×1 projection, resize)."""

    def __init__(self, dim: int, out_channels: tuple[int, ...], cls: bool, batchnorm: bool) -> None:
        super().__init__()
        self.projects = nn.ModuleList(ConvUnit(dim, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList(resize_layer(i, c) for i, c in enumerate(out_channels))
        if cls:
            self.readout_projects = readout_projects(dim)
        if batchnorm:
            self.batchnorm_layers = nn.ModuleList(nn.BatchNorm2d(dim) for _ in out_channels)

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]], grid: tuple[int, int],
                memory_format: torch.memory_format) -> list[torch.Tensor]:
        maps = []
        for i, (tokens, cls) in enumerate(features):
            if hasattr(self, "readout_projects"):
                tokens = apply_readout(self.readout_projects[i], tokens, cls)
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid).contiguous(memory_format=memory_format)
            if hasattr(self, "batchnorm_layers"):
                x = self.batchnorm_layers[i](x)
            maps.append(self.resize_layers[i](self.projects[i](x)))
        return maps


class DPTDinoV3Head(nn.Module):
    """Reassemble, 3×3 convs to `features`, fuse coarse to fine, regress `outputs` channels at about 16·(h, w).

    On a patch grid with an odd side the stride-2 level rounds up, so the output is larger than
    16·(h, w), as in the reference; callers resize it.
    """

    memory_format = torch.contiguous_format

    def __init__(self, dim: int, features: int, out_channels: tuple[int, ...], cls: bool, batchnorm: bool,
                 outputs: int) -> None:
        super().__init__()
        self.reassemble_blocks = Reassemble(dim, out_channels, cls, batchnorm)
        self.convs = nn.ModuleList(ConvUnit(c, features, 3, bias=False) for c in out_channels)
        self.fusion_blocks = nn.ModuleList(FusionBlock(features, takes_skip=i > 0) for i in range(len(out_channels)))
        self.project = ConvUnit(features, features, 3)
        self.conv_depth = nn.Module()
        self.conv_depth.head = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, outputs, 1),
        )

    def forward(self, features: list[tuple[torch.Tensor, torch.Tensor]], grid: tuple[int, int]) -> torch.Tensor:
        maps = self.reassemble_blocks(features, grid, self.memory_format)
        maps = [conv(x) for conv, x in zip(self.convs, maps)]
        out = self.fusion_blocks[0](maps[-1])
        for block, skip in zip(self.fusion_blocks[1:], reversed(maps[:-1])):
            out = block(out, skip)
        out = F.relu(self.project(out))
        return self.conv_depth.head(out)
