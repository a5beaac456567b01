"""The head's BatchNorm layers in training: batch statistics over the global batch, or the stored ones.

`train`: the layers normalise with the statistics of the whole global batch (all processes together) and
update their running averages, as a head trained from scratch is (AnyDepth trains its decoders this way).
`frozen`: they normalise with their stored running statistics, which stay as they are; their scale and shift
still learn. Across processes, CUDA uses `torch.nn.SyncBatchNorm`; elsewhere (gloo on the CPU, where
SyncBatchNorm raises) `GlobalBatchNorm2d` all-reduces the per-channel sums, sums of squares and counts.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from anydepth_cli.training.distributed import World

MODES = ("train", "frozen")


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over the processes; its gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd's signature
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch of every process together.

    In eval mode it is a plain BatchNorm2d. Its state dict is that of BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dtype = torch.promote_types(x.dtype, torch.float32)
        values = x.to(dtype)
        count = values.new_full((1,), values.numel() / values.shape[1])
        totals = _SumOverProcesses.apply(torch.cat([values.sum((0, 2, 3)), (values * values).sum((0, 2, 3)), count]))
        channels = values.shape[1]
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels:2 * channels] / n - mean * mean).clamp_min(0)
        self._update_running(mean.detach(), var.detach(), n.detach())
        out = (values - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        return (out * self.weight[None, :, None, None] + self.bias[None, :, None, None]).to(x.dtype)

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """Running averages as BatchNorm2d keeps them (the variance unbiased, momentum `self.momentum`)."""
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
            unbiased = var * n / (n - 1).clamp_min(1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def _global(norm: nn.BatchNorm2d) -> GlobalBatchNorm2d:
    """`norm` as a GlobalBatchNorm2d with the same parameters and buffers."""
    out = GlobalBatchNorm2d(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats,
                            device=norm.weight.device, dtype=norm.weight.dtype)
    out.load_state_dict(norm.state_dict())
    out.train(norm.training)
    return out


def global_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d replaced by a GlobalBatchNorm2d (in place; returned for chaining)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, _global(child))
        else:
            global_batchnorm(child)
    return module


def prepare_head(head: nn.Module, mode: str, world: World, device: torch.device) -> nn.Module:
    """The head ready to train in BatchNorm `mode`: in `train` mode across several processes, its BatchNorms
    synchronised (SyncBatchNorm on CUDA, GlobalBatchNorm2d elsewhere)."""
    if mode == "train" and world.distributed:
        head = nn.SyncBatchNorm.convert_sync_batchnorm(head) if device.type == "cuda" else global_batchnorm(head)
    return head


def set_training_mode(network: nn.Module, head: nn.Module, mode: str) -> None:
    """The frozen encoder (and everything else) in eval mode; the head in train mode when its BatchNorms train."""
    network.eval()
    head.train(mode == "train")
