"""Inference-time rewrites that keep a network's outputs: BatchNorm and LayerScale folding, in-place ReLU,
channels-last convolutions, and the faster CPU kernels of `fastpath` (linear layers with the GELU after them on
oneDNN, DySample as a gather)."""

from __future__ import annotations

import torch
from torch import nn

from anydepth_cli.models.dinov3 import RopeEmbed
from anydepth_cli.models.dpt_dinov3 import Reassemble
from anydepth_cli.models.fastpath import FastConv, FastLinear, GatherDySample, ResidualBlock, SplitReadout
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.models.readout import ReadoutProject
from anydepth_cli.models.sdt import DySample
from anydepth_cli.models.vit import Attention, Block, LayerScale, Mlp


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


def fold_key_bias_mask(attention: Attention) -> None:
    """Multiply a stored qkv `bias_mask` into the qkv bias and drop it (DINOv3 zeroes the key bias so)."""
    mask = getattr(attention.qkv, "bias_mask", None)
    if mask is not None:
        with torch.no_grad():
            attention.qkv.bias.mul_(mask)
        del attention.qkv.bias_mask


def _fold_sequential(block: nn.Sequential) -> None:
    for i in range(len(block) - 1):
        first, second = block[i], block[i + 1]
        if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
            block[i] = fold_batchnorm(first, second)
            block[i + 1] = nn.Identity()
        elif type(first) is nn.Linear and isinstance(second, nn.GELU) and second.approximate == "none":
            block[i] = FastLinear(first, gelu=True)
            block[i + 1] = nn.Identity()
        elif type(first) is DySample:
            block[i] = GatherDySample(first)


def _fuse_conv_relu(block: nn.Sequential) -> None:
    """Put each convolution of `block` on oneDNN (`FastConv`), with the ReLU after it (past identities) fused in."""
    for i, module in enumerate(block):
        if type(module) is not nn.Conv2d:
            continue
        following = next((j for j in range(i + 1, len(block)) if not isinstance(block[j], nn.Identity)), None)
        relu = following is not None and isinstance(block[following], nn.ReLU)
        block[i] = FastConv(module, relu)
        if relu:
            block[following] = nn.Identity()


def _split_readouts(network: nn.Module) -> None:
    """Compute each cls-token readout without joining the tokens (`SplitReadout`)."""
    for module in list(network.modules()):
        if isinstance(module, nn.ModuleList):
            for i, child in enumerate(module):
                if type(child) is ReadoutProject:
                    module[i] = SplitReadout(child)


def _fast_linears(network: nn.Module) -> None:
    """Put every remaining `nn.Linear` on the oneDNN path, the MLPs' fc1 with their GELU."""
    for module in list(network.modules()):
        if isinstance(module, Mlp) and type(module.fc1) is nn.Linear:
            module.fc1, module.act = FastLinear(module.fc1, gelu=True), nn.Identity()
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                setattr(module, name, FastLinear(child))


def cast_network(network: nn.Module, dtype: torch.dtype) -> None:
    """Cast a network's weights to `dtype` once, so that it runs in `dtype` without autocast and without casts
    between layers. Positions stay float32: the rotary periods and DySample's sub-pixel grid."""
    kept = {id(m.periods) for m in network.modules() if isinstance(m, RopeEmbed)}
    kept |= {id(m.init_pos) for m in network.modules() if isinstance(m, DySample)}
    with torch.no_grad():
        for module in network.modules():
            for parameter in module.parameters(recurse=False):
                if parameter.is_floating_point():
                    parameter.data = parameter.data.to(dtype)
            for name, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point() and id(buffer) not in kept:
                    setattr(module, name, buffer.to(dtype))


def _fuse_residuals(network: nn.Module) -> None:
    """Fuse each folded transformer block's residual additions into its output projections (`ResidualBlock`)."""
    for module in list(network.modules()):
        if isinstance(module, nn.ModuleList):
            for i, child in enumerate(module):
                if type(child) is Block and isinstance(child.ls1, nn.Identity):
                    module[i] = ResidualBlock(child)


def prepare_for_inference(network: DepthNetwork, dtype: torch.dtype = torch.float32) -> DepthNetwork:
    """Fold BatchNorms into their convs, LayerScales and key-bias masks into their linears, make ReLUs in-place,
    run the head's convolutions channels-last, and put linear layers (with the GELUs after them), the cls
    readouts and DySample on the faster CPU kernels of `fastpath`. A CPU network to run in bf16 is then cast to
    bf16 (`cast_network`): its fast kernels run in bf16 (oneDNN's AMX or AVX512-BF16 kernels) with no autocast.

    The network must be in eval mode and is changed in place (its state dict no longer matches a
    checkpoint); outputs equal the original's up to float rounding (bf16's, for a bf16 network).
    """
    if network.training:
        raise ValueError("prepare_for_inference needs a network in eval mode")
    _split_readouts(network)
    for module in list(network.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
            _fuse_conv_relu(module)
        elif isinstance(module, nn.ReLU):
            module.inplace = True
        elif isinstance(module, Block) and isinstance(module.ls1, LayerScale):
            fold_key_bias_mask(module.attn)
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
    _fast_linears(network)
    _fuse_residuals(network)
    network.head.to(memory_format=torch.channels_last)
    network.head.memory_format = torch.channels_last
    if dtype == torch.bfloat16 and next(network.parameters()).device.type == "cpu":
        cast_network(network, dtype)
    return network
