"""Counting a bench network's FLOPs on the meta device: correctly (FLOP_CONVENTION) and by the paper's convention
(PAPER_FLOP_CONVENTION)."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import build_network

FLOP_CONVENTION = (
    "torch.utils.flop_counter.FlopCounterMode: a multiply-add counts as 2 FLOPs; only matrix multiplications, "
    "convolutions (transposed ones by their input size) and scaled-dot-product attention (its two matrix products) "
    "are counted, not bias adds, normalisation, activations, interpolation or grid sampling; per image, counted at "
    "batch 1 on the meta device on the network as built (before inference folding, which removes no counted op)"
)
PAPER_FLOP_CONVENTION = (
    "twice the multiply-adds the `thop` package counts, decoder only, on the network as built: "
    "only layers with a thop rule count; a convolution, transposed ones included, is output elements × input "
    "channels / groups × kernel elements (so a transposed convolution is counted by its output size, 16× the "
    "work of the 4×4 stride-4 one and 4× that of the 2×2 stride-2 one), a linear layer output elements × input "
    "features, a BatchNorm 2 per input element, twice that with an affine transform; biases, "
    "activations and functional ops (interpolation, grid sampling, concatenation) count nothing"
)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one image through the encoder and through the decoder (FLOP_CONVENTION), and the decoder's by
    the paper's convention (PAPER_FLOP_CONVENTION)."""

    encoder: int
    decoder: int
    decoder_thop: int

    @property
    def total(self) -> int:
        return self.encoder + self.decoder


def module_flops(fn: Callable[..., Any], *inputs: Any) -> tuple[int, Any]:
    """FLOPs `fn(*inputs)` performs (FLOP_CONVENTION) and what it returned."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        result = fn(*inputs)
    return counter.get_total_flops(), result


def thop_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Multiply-adds the `thop` package counts for one call of leaf `module` from input `x` to output `y`
    (PAPER_FLOP_CONVENTION), for the layer kinds our decoders hold: convolutions, linear layers and BatchNorm;
    0 for the others (activations, identities, our parameter-free modules), as in thop."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return y.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return y.numel() * module.in_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 2 * x.numel() * (2 if module.affine else 1)
    return 0


class ThopCounter(AbstractContextManager["ThopCounter"]):
    """While entered, counts the FLOPs of forwards through `module` by the paper's convention (PAPER_FLOP_CONVENTION)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.macs = 0
        self._handles: list[Any] = []

    def __enter__(self) -> "ThopCounter":
        self._handles = [leaf.register_forward_hook(self._count) for leaf in self.module.modules()
                         if next(leaf.children(), None) is None]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _count(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.macs += thop_macs(module, inputs[0], output)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count_flops(config: NetworkConfig, resolution: int) -> FlopCount:
    """Encoder and decoder FLOPs of one `resolution`² image, and the decoder's by the paper's convention, counted
    on the meta device (no compute)."""
    network = build_network(config, device="meta")
    image = torch.empty(1, 3, resolution, resolution, device="meta")
    encoder, (features, grid) = module_flops(network.encoder, image)
    with ThopCounter(network.head) as thop:
        decoder, _ = module_flops(network.head, features, grid)
    return FlopCount(encoder, decoder, thop.flops)
