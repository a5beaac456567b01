"""Faster CPU kernels for the same functions: linear layers and convolutions on oneDNN with the activation after
them (and a transformer block's residual additions) fused in, the cls readout without its concatenation,
DySample's sampling as one weighted gather.

Each module computes what the module it replaces computes, up to float rounding, and falls back
to that module's standard PyTorch ops wherever the faster kernel does not apply: on GPUs, under
autocast, with gradients, while exporting (the graph keeps the standard ops) or compiling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.models.readout import ReadoutProject
from anydepth_cli.models.sdt import GROUPS, SCALE, DySample
from anydepth_cli.models.tracing import is_exporting
from anydepth_cli.models.vit import Block, RotaryFn

ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_CONV = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


FAST_DTYPES = (torch.float32, torch.bfloat16)
"""The dtypes the fast kernels run in: a network prepared in bf16 (`fuse.cast_network`) runs them in bf16."""


def cpu_kernels_apply(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a fast CPU kernel may run on `x`: float32, or bfloat16 with bfloat16 weights, on the CPU, no
    autocast, no gradient, not while exporting or compiling."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype and x.dtype in FAST_DTYPES
            and not torch.is_autocast_enabled("cpu") and not (torch.is_grad_enabled() and weight.requires_grad)
            and not is_exporting() and not torch.compiler.is_compiling())


class FastLinear(nn.Module):
    """A linear layer, optionally followed by GELU (exact, erf), computed on the CPU by oneDNN's matmul with the
    GELU fused into it, and elsewhere by `F.linear` and `F.gelu`.

    PyTorch runs float32 `F.linear` through MKL, which uses only AVX2 on AMD processors; oneDNN uses AVX-512
    there.
    """

    def __init__(self, linear: nn.Linear, gelu: bool = False) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.gelu = gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if ONEDNN_LINEAR and cpu_kernels_apply(x, self.weight):
            attr, algorithm = ("gelu", "none") if self.gelu else ("none", "")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [], algorithm)
        out = F.linear(x, self.weight, self.bias)
        return F.gelu(out) if self.gelu else out

    def add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`residual` + the layer's output, the sum fused into oneDNN's matmul on the CPU (the layer has no GELU)."""
        if ONEDNN_LINEAR and cpu_kernels_apply(x, self.weight):
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
        return residual + F.linear(x, self.weight, self.bias)


class ResidualBlock(nn.Module):
    """A transformer block whose LayerScales are folded (`fuse.fold_layerscale`) and whose output projections
    (attention's proj and the MLP's fc2, FastLinears) add their residuals inside their matmuls: two passes over
    the token stream fewer per block. Where the fast kernels do not apply, the additions are separate."""

    def __init__(self, block: Block) -> None:
        super().__init__()
        if not (isinstance(block.ls1, nn.Identity) and isinstance(block.ls2, nn.Identity)
                and isinstance(block.attn.proj, FastLinear) and isinstance(block.mlp.fc2, FastLinear)):
            raise ValueError("a block to fuse has its LayerScales folded and FastLinear output projections")
        self.block = block

    def forward(self, x: torch.Tensor, rotary: RotaryFn | None = None) -> torch.Tensor:
        block = self.block
        x = block.attn.proj.add(block.attn.attend(block.norm1(x), rotary), x)
        return block.mlp.fc2.add(block.mlp.act(block.mlp.fc1(block.norm2(x))), x)


class FastConv(nn.Module):
    """A 2-D convolution, optionally followed by ReLU, computed on the CPU by oneDNN with the ReLU fused into it
    (one pass over the output instead of two), and elsewhere by `conv` and `F.relu`."""

    def __init__(self, conv: nn.Conv2d, relu: bool = False) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("a convolution to fuse pads with explicit zeros")
        self.conv = conv
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if ONEDNN_CONV and cpu_kernels_apply(x, conv.weight):
            return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, conv.padding, conv.stride,
                                                           conv.dilation, conv.groups, "relu" if self.relu else "none",
                                                           [], "")
        out = conv(x)
        return F.relu(out) if self.relu else out


class SplitReadout(nn.Module):
    """A cls-token readout (`ReadoutProject`) computed without joining the tokens: Linear(2C → C) over
    [token, cls] is W_t·token + (W_c·cls + b), and the second term, one vector per image, is the bias of a
    C → C matmul over the tokens, with the GELU fused into it. Half the multiply-adds and no (B, N, 2C) copy;
    where the fast kernels do not apply it joins and projects as `readout` does."""

    def __init__(self, readout: ReadoutProject) -> None:
        super().__init__()
        linear, gelu = readout
        if not (isinstance(linear, nn.Linear) and isinstance(gelu, nn.GELU) and gelu.approximate == "none"):
            raise ValueError("a readout to split is a Linear followed by an exact GELU")
        self.readout = readout
        width = linear.out_features
        self.register_buffer("token_weight", linear.weight.detach()[:, :width].contiguous(), persistent=False)
        self.register_buffer("cls_weight", linear.weight.detach()[:, width:].contiguous(), persistent=False)
        self.bias = linear.bias

    def join(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        if not (ONEDNN_LINEAR and cpu_kernels_apply(tokens, self.token_weight)):
            return self.readout.join(tokens, cls)
        biases = F.linear(cls, self.cls_weight, self.bias)
        return torch.stack([torch.ops.mkldnn._linear_pointwise(t, self.token_weight, bias, "gelu", [], "none")
                            for t, bias in zip(tokens, biases)])


def source_pixels(offset: torch.Tensor, centres: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left (or top) source pixel, at most `size` − 2, and the fraction of the way to the next one, of sampling
    points `offset` away from pixel `centres` along an axis of `size` pixels.

    The arithmetic is DySample's normalisation followed by `grid_sample`'s unnormalisation and border clip
    (align_corners False), so the positions equal the ones `grid_sample` samples: its CPU kernel computes
    (grid + 1) · size / 2 − 0.5 as one fused multiply-add, rounded once, which float64 reproduces here. A point on
    the last pixel gets fraction 1 from the one before it, which weighs the same pixel as `grid_sample` does.
    """
    half = size / 2
    grid = (offset + centres) / half - 1
    position = ((grid + 1).double() * half - 0.5).float().clamp_(0, size - 1)
    start = position.floor().clamp_(max=size - 2)
    return start, position - start


class GatherDySample(nn.Module):
    """DySample with its bilinear `grid_sample` computed as a weighted sum of four gathered pixel vectors
    (`F.embedding_bag`), read from and written to channels-last maps.

    On a channels-last input this saves the layout copies around `grid_sample` (its input split into groups, its
    output back to channels-last for the next convolution); the offsets, sampling positions and weights are the
    ones `dysample` computes. Elsewhere it runs `dysample`, the module it was made from. In bf16 the sampling
    positions are computed in float32 (bf16 would round them to half a pixel at 100 pixels) and only the
    gather, its weights and its output are bf16.
    """

    def __init__(self, dysample: DySample) -> None:
        super().__init__()
        self.dysample = dysample

    def applies(self, x: torch.Tensor) -> bool:
        return (cpu_kernels_apply(x, self.dysample.offset.weight) and min(x.shape[-2:]) >= 2
                and x.is_contiguous(memory_format=torch.channels_last) and x.numel() * SCALE * SCALE < 2**31)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.applies(x):
            return self.dysample(x)
        b, c, h, w = x.shape
        # channels (x/y, group, sub-row, sub-column) → axes (x/y, batch, row, sub-row, column, sub-column, group):
        # the order of the output's channels-last pixels and their groups
        offset = self.dysample.offsets(x).permute(0, 2, 3, 1).reshape(b, h, w, 2, GROUPS, SCALE, SCALE)
        offset = offset.permute(3, 0, 1, 5, 2, 6, 4).float().contiguous()
        columns = (torch.arange(w, dtype=torch.float32) + 0.5).view(1, 1, 1, w, 1, 1)
        rows = (torch.arange(h, dtype=torch.float32) + 0.5).view(1, h, 1, 1, 1, 1)
        left, x_fraction = source_pixels(offset[0], columns, w)
        top, y_fraction = source_pixels(offset[1], rows, h)
        x_rest, y_rest = 1 - x_fraction, 1 - y_fraction
        weights = torch.stack([y_rest * x_rest, y_rest * x_fraction, y_fraction * x_rest, y_fraction * x_fraction],
                              dim=-1)
        index = self._table_rows(top, left, b, h, w)
        table = x.permute(0, 2, 3, 1).reshape(b * h * w * GROUPS, c // GROUPS)
        weights = weights.view(-1, 4).to(x.dtype)
        out = F.embedding_bag(index.view(-1, 4), table, per_sample_weights=weights, mode="sum")
        return out.view(b, SCALE * h, SCALE * w, c).permute(0, 3, 1, 2)

    @staticmethod
    def _table_rows(top: torch.Tensor, left: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """Rows of the four neighbours (top-left, top-right, bottom-left, bottom-right) in the table of group
        vectors, each pixel's GROUPS vectors in turn."""
        pixel = top.int() * w + left.int() + (torch.arange(b, dtype=torch.int32) * (h * w)).view(b, 1, 1, 1, 1, 1)
        first = pixel * GROUPS + torch.arange(GROUPS, dtype=torch.int32)
        corners = torch.tensor([0, GROUPS, w * GROUPS, (w + 1) * GROUPS], dtype=torch.int32)
        return first.unsqueeze(-1) + corners
