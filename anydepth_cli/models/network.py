"""Encoder + head, built from a `NetworkConfig`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.dinov2 import DinoV2Encoder
from anydepth_cli.models.dinov3 import DinoV3Encoder
from anydepth_cli.models.dpt import DPTHead
from anydepth_cli.models.dpt_dinov3 import DPTDinoV3Head
from anydepth_cli.models.dpt_vggt import DPTVGGTHead
from anydepth_cli.models.sdt import SDTHead
from anydepth_cli.models.vggt import VGGTEncoder


class DepthNetwork(nn.Module):
    """Image batch (B, 3, H, W), normalised → the model's quantity (B, 1, H', W') after its final activation:
    affine-invariant depth or disparity, or depth in metres, as `config.output` declares."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config)
        width = config.feature_width
        if config.head == "sdt":
            self.head = SDTHead(width, config.fusion, config.cls, config.detail_enhancer)
        elif config.head == "dpt":
            self.head = DPTHead(width, config.features, config.out_channels, config.cls, config.patch_size,
                                final_relu=not config.metric)
        elif config.head == "dpt-vggt":
            self.head = DPTVGGTHead(width, config.features, config.out_channels, config.outputs)
        else:
            self.head = DPTDinoV3Head(width, config.features, config.out_channels, config.cls, config.batchnorm,
                                      config.outputs)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output before the final activation (what the parity fixtures store), in the input's dtype: a
        network cast to another dtype (`fuse.cast_network`) takes its input in its own and gives its output back."""
        own = next(self.encoder.parameters()).dtype
        features, grid = self.encoder(x.to(own))
        out = self.head(features, grid)
        return out if own == x.dtype else out.to(x.dtype)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """The final activation the config declares, applied to a head output."""
        if self.config.activation == "sigmoid":
            return torch.sigmoid(raw) * self.config.max_depth
        out = F.relu(raw)
        floor = self.config.output_floor
        return out + floor if floor else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.raw(x))


def build_encoder(config: NetworkConfig) -> nn.Module:
    """The encoder `config.encoder` names, giving the head `config.feature_width` channels per tapped layer."""
    if config.encoder == "vggt":
        return VGGTEncoder(config)
    encoder_cls = DinoV3Encoder if config.encoder == "dinov3" else DinoV2Encoder
    return encoder_cls(config.embed, config.depth, config.heads, config.layers, config.encoder_norm)


def build_network(config: NetworkConfig, device: torch.device | str | None = None) -> DepthNetwork:
    """A network with the layout of `config`, in eval mode (weights uninitialised on the meta device)."""
    with torch.device(device or "cpu"):
        return DepthNetwork(config).eval()
