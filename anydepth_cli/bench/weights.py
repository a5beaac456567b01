"""Random weights fit for comparing two implementations: nothing left at a neutral value, outputs that vary.

Freshly built networks are a poor test of parity: BatchNorms hold mean 0 and variance 1 (folding
them changes nothing), LayerScales are 1, DySample's offsets are near zero, and a random head's
outputs mostly sit below the final ReLU, so two implementations agree on a constant map whatever
they compute. `vary_weights` fixes the first three and `lift_outputs` the last.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from anydepth_cli.inference.preprocess import prepare_batch
from anydepth_cli.io.images import read_image
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.models.sdt import DySample
from anydepth_cli.models.vit import LayerScale

ABOVE_FLOOR = 0.9
"""Share of output pixels `lift_outputs` puts above the final ReLU."""


@torch.no_grad()
def vary_weights(network: DepthNetwork, seed: int = 0) -> DepthNetwork:
    """Give `network` (freshly built) random BatchNorm statistics and affine terms, LayerScales, position table,
    prefix tokens and DySample offsets and scopes, from `seed`; changed in place and returned."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(like.shape, generator=generator)).to(like)

    def normal(like: torch.Tensor, std: float) -> torch.Tensor:
        return (std * torch.randn(like.shape, generator=generator)).to(like)

    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(normal(module.running_mean, 0.2))
            module.running_var.copy_(uniform(module.running_var, 0.5, 2.0))
            module.weight.copy_(uniform(module.weight, 0.5, 1.5))
            module.bias.copy_(normal(module.bias, 0.2))
        elif isinstance(module, LayerScale):
            module.gamma.copy_(uniform(module.gamma, 0.1, 1.0))
        elif isinstance(module, DySample):
            module.offset.weight.copy_(normal(module.offset.weight, 0.05))
            module.scope.weight.copy_(normal(module.scope.weight, 0.05))
    for name, parameter in network.encoder.named_parameters():
        if name in ("pos_embed", "cls_token", "storage_tokens"):
            parameter.copy_(normal(parameter, 0.5))
    return network


@torch.no_grad()
def lift_outputs(network: DepthNetwork, sample: torch.Tensor, share: float = ABOVE_FLOOR) -> DepthNetwork:
    """Shift the bias of the head's last convolution so that `share` of its output on `sample` is positive, i.e.
    above the ReLU that follows it: the activated output varies over the image. Changed in place and returned."""
    last = [m for m in network.head.modules() if isinstance(m, nn.Conv2d)][-1]
    if last.bias is None:
        raise ValueError("the head's last convolution has no bias to lift")
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda module, inputs, output: seen.append(output.float().flatten()))
    try:
        network.raw(sample.to(last.weight.device, last.weight.dtype))
    finally:
        hook.remove()
    values = seen[0][:: max(1, seen[0].numel() // 1_000_000)]  # torch.quantile takes at most 16 M values
    last.bias.sub_(torch.quantile(values, 1 - share).to(last.bias))
    return network


def output_difference(ours: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """The largest |ours − reference|, the reference's range and their ratio (the figure a parity claim rests on)."""
    ours, reference = ours.float().cpu(), reference.float().cpu()
    spread = float(reference.max() - reference.min())
    largest = float((ours - reference).abs().max())
    return {"max_abs_difference": largest, "output_min": float(reference.min()), "output_max": float(reference.max()),
            "max_difference_over_range": largest / spread if spread > 0 else float("inf")}


def photo_batch(photo: Path, height: int, width: int | None = None) -> torch.Tensor:
    """`photo` resized to height × width (default square) and normalised, as a 1×3×H×W batch."""
    return prepare_batch([read_image(photo, None)], (height, width or height))
