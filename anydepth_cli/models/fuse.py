"""Inference-time rewrites that keep a network's outputs: BatchNorm and LayerScale folding, in-place ReLU,
channels-last convolutions."""

from __future__ import annotations

import torch
from torch import nn

from anydepth_cli.models.dpt_dinov3 import Reassemble
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.models.vit import Block, LayerScale


def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv computing `norm(conv(x))` with the norm's running statistics."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
    return fused


def fold_batchnorm_into_next(norm: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """A 1×1 conv computing `conv(norm(x))` with the norm's running statistics."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("only a plain 1×1 conv can absorb the BatchNorm before it")
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=shift.device)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, bias=True, device=conv.weight.device,
                      dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(1, -1, 1, 1))
        fused.bias.copy_(bias + conv.weight.flatten(1) @ shift)
    return fused


def fold_layerscale(linear: nn.Linear, gamma: torch.Tensor) -> None:
    """Scale `linear`'s outputs by `gamma` in its weights, so `gamma * linear(x)` becomes `linear(x)`."""
    with torch.no_grad():
        linear.weight.mul_(gamma.view(-1, 1))
        if linear.bias is not None:
            linear.bias.mul_(gamma)


def _fold_sequential(block: nn.Sequential) -> None:
    for i in range(len(block) - 1):
        conv, norm = block[i], block[i + 1]
        if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
            block[i] = fold_batchnorm(conv, norm)
            block[i + 1] = nn.Identity()


def prepare_for_inference(network: DepthNetwork) -> DepthNetwork:
    """Fold BatchNorms into their convs and LayerScales into their linears, make ReLUs in-place, and run the
    head's convolutions channels-last.

    The network must be in eval mode and is changed in place (its state dict no longer matches a
    checkpoint); outputs equal the original's up to float rounding.
    """
    if network.training:
        raise ValueError("prepare_for_inference needs a network in eval mode")
    for module in list(network.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        elif isinstance(module, nn.ReLU):
            module.inplace = True
        elif isinstance(module, Block) and isinstance(module.ls1, LayerScale):
            fold_layerscale(module.attn.proj, module.ls1.gamma)
            fold_layerscale(module.mlp.fc2, module.ls2.gamma)
            module.ls1 = nn.Identity()
            module.ls2 = nn.Identity()
        elif isinstance(module, Reassemble) and hasattr(module, "batchnorm_layers"):
            for norm, project in zip(module.batchnorm_layers, module.projects):
                project.conv = fold_batchnorm_into_next(norm, project.conv)
            del module.batchnorm_layers
        enhancer = getattr(module, "detail_enhancer", None)
        if enhancer is not None and isinstance(enhancer.norm, nn.BatchNorm2d):
            enhancer.dwconv = fold_batchnorm(enhancer.dwconv, enhancer.norm)
            enhancer.norm = nn.Identity()
    network.head.to(memory_format=torch.channels_last)
    network.head.memory_format = torch.channels_last
    return network
