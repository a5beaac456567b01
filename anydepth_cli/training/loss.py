"""The training loss: the activated prediction regressed onto a target normalised to a fixed range, plus
multi-scale gradient matching.

Per image, over its valid pixels (the target t is in the target space: depth, or disparity = 1/depth):

1. The target is mapped affinely so that its 2nd percentile goes to 0 and its 98th to 1:
   t̂ = (t − q₂(t)) / (q₉₈(t) − q₂(t)) (percentiles interpolated linearly between the sorted values, as
   `torch.quantile` does; the tails fall just outside [0, 1]). Any positive scale and any shift of the ground
   truth give the same t̂, so the loss does not depend on its units, scale or offset.
2. The prediction p is the network's output after its final activation (ReLU, plus 0.001 for depth), compared
   with t̂ as it is, with no alignment: r = p − t̂. A prediction that runs the wrong way round, or whose spread
   is not that of t̂, keeps a large loss, so training fixes the output's sign (large = far for depth, large =
   near for disparity) and anchors its scale to the range [0, 1].
3. L_reg = mean |r|.
4. L_grad = Σ_{k=0..3} (Σ |∂x r_k| + Σ |∂y r_k|) / (valid pixels of r_k), with r_k = r sampled every 2^k pixels
   and a difference counted only where both its pixels are valid (multi-scale gradient matching).
5. L = L_reg + GRADIENT_WEIGHT · L_grad, with GRADIENT_WEIGHT = 0.5.

An image with fewer than two valid pixels, or whose target has no spread (q₉₈ = q₂), counts 0. The batch loss is
the mean of the per-image losses, so it does not depend on how a batch is split across processes or accumulation
steps.

The gradient of the final ReLU is that of `relu_raising_below`: where the ReLU clips, the gradient still passes
when it would raise the output, so a pixel pushed below the floor is pulled back toward a target above it and a
head cannot die during training (as one re-anchoring a checkpoint's output range at a high learning rate would).
The loss's value is unchanged.

A metric head (`--target metric`, sigmoid × max_depth) is trained as Depth Anything V2's metric code trains it,
with the scale-invariant log loss instead (`silog_loss`): on its prediction p and the ground truth t, both in
metres, over the valid pixels with 0.001 ≤ t ≤ max_depth, with d = log t − log p,
L = sqrt(mean(d²) − SILOG_LAMBDA · mean(d)²), SILOG_LAMBDA = 0.5. It is taken per image and averaged over the
batch (as the loss above; their code pools the batch's pixels), so it does not depend on how a batch is split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GRADIENT_WEIGHT = 0.5
GRADIENT_SCALES = 4
TARGET_QUANTILES = (0.02, 0.98)
"""The target percentiles mapped to 0 and 1."""
SILOG_LAMBDA = 0.5
"""The weight of the squared mean log error that SiLog subtracts (Depth Anything V2's metric training)."""
METRIC_MIN_DEPTH = 0.001
"""Ground truth below this (metres) is not scored by `silog_loss`, as in Depth Anything V2's metric training."""
TARGET_MIDDLE = 0.5
"""The middle of the normalised target's range (where a fresh head's output starts)."""


class _ReluRaisingBelow(torch.autograd.Function):
    """ReLU whose gradient also passes where the input is ≤ 0, when descending it would raise the input."""

    @staticmethod
    def forward(ctx, raw: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd's signature
        ctx.save_for_backward(raw)
        return raw.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        (raw,) = ctx.saved_tensors
        return torch.where((raw > 0) | (grad < 0), grad, 0.0)


def relu_raising_below(raw: torch.Tensor, floor: float) -> torch.Tensor:
    """The final activation relu(raw) + floor as training differentiates it (see the module docstring)."""
    out = _ReluRaisingBelow.apply(raw)
    return out + floor if floor else out


@dataclass(frozen=True)
class LossTerms:
    """The batch loss and its two terms (each a batch mean of per-image values)."""

    total: torch.Tensor
    regression: torch.Tensor
    gradient: torch.Tensor


def masked_quantiles(values: torch.Tensor, valid: torch.Tensor, quantiles: tuple[float, ...]) -> torch.Tensor:
    """(B, len(quantiles)): each image's quantiles of its valid values, interpolated linearly (as
    `torch.quantile`); 0 for an image without a valid value."""
    count = valid.flatten(1).sum(1)
    ordered = torch.where(valid, values, torch.inf).flatten(1).sort(1).values
    position = torch.tensor(quantiles, dtype=values.dtype, device=values.device)[None] * (count[:, None] - 1).clamp_min(0)
    below = position.floor().long()
    above = torch.minimum(below + 1, (count[:, None] - 1).clamp_min(0))
    low, high = ordered.gather(1, below), ordered.gather(1, above)
    result = low + (high - low).nan_to_num(0.0, 0.0, 0.0) * (position - below)
    return torch.where(count[:, None] > 0, result, 0.0)


def normalise_target(target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (H, W) target mapped to t̂ (step 1 above; 0 at invalid pixels), and whether it has any spread."""
    low, high = masked_quantiles(target, valid, TARGET_QUANTILES).unbind(1)
    spread = high - low
    usable = spread > 1e-6 * torch.maximum(high.abs(), low.abs()).clamp_min(1e-12)
    out = (target - low[:, None, None]) / torch.where(usable, spread, 1.0)[:, None, None]
    return torch.where(valid, out, 0.0), usable


def gradient_matching(residual: torch.Tensor, valid: torch.Tensor, scales: int = GRADIENT_SCALES) -> torch.Tensor:
    """Per-image multi-scale gradient-matching term of a (B, H, W) residual over `valid` (step 4 above)."""
    total = residual.new_zeros(residual.shape[0])
    for k in range(scales):
        step = 2 ** k
        r, m = residual[:, ::step, ::step], valid[:, ::step, ::step].to(residual.dtype)
        mx, my = m[:, :, 1:] * m[:, :, :-1], m[:, 1:, :] * m[:, :-1, :]
        gx = ((r[:, :, 1:] - r[:, :, :-1]).abs() * mx).sum((1, 2))
        gy = ((r[:, 1:, :] - r[:, :-1, :]).abs() * my).sum((1, 2))
        total = total + (gx + gy) / m.sum((1, 2)).clamp_min(1)
    return total


def depth_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> LossTerms:
    """The loss of (B, H, W) activated predictions against targets in the same space over `valid` (see the
    module docstring)."""
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred, target = pred.to(dtype), target.to(dtype)
    valid = valid & (valid.flatten(1).sum(1) >= 2)[:, None, None]
    normalised, spread = normalise_target(target, valid)
    valid = valid & spread[:, None, None]
    residual = torch.where(valid, pred - normalised, 0.0)
    regression = residual.abs().sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)
    gradient = gradient_matching(residual, valid)
    per_image = regression + GRADIENT_WEIGHT * gradient
    return LossTerms(per_image.mean(), regression.mean(), gradient.mean())


def silog_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, max_depth: float) -> LossTerms:
    """The scale-invariant log loss of (B, H, W) metric predictions against metric targets (see the module
    docstring); its `gradient` term is 0."""
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred, target = pred.to(dtype), target.to(dtype)
    valid = valid & (target >= METRIC_MIN_DEPTH) & (target <= max_depth) & (pred > 0)
    count = valid.flatten(1).sum(1)
    d = torch.where(valid, torch.log(torch.where(valid, target, 1.0)) - torch.log(torch.where(valid, pred, 1.0)), 0.0)
    mean = d.sum((1, 2)) / count.clamp_min(1)
    square = (d * d).sum((1, 2)) / count.clamp_min(1)
    per_image = torch.where(count >= 2, (square - SILOG_LAMBDA * mean * mean).clamp_min(1e-12).sqrt(), 0.0)
    return LossTerms(per_image.mean(), per_image.mean(), per_image.new_zeros(()))


def activate_for_training(raw: torch.Tensor, activation: str, floor: float, max_depth: float | None) -> torch.Tensor:
    """The head's final activation as training differentiates it: sigmoid × max_depth for metric heads, else
    `relu_raising_below`."""
    if activation == "sigmoid":
        return torch.sigmoid(raw) * max_depth
    return relu_raising_below(raw, floor)


def at_floor(raw: torch.Tensor, activation: str) -> torch.Tensor:
    """How many outputs sit where the final activation passes no gradient (a ReLU's clipped side; a sigmoid has
    none)."""
    return raw.new_zeros((), dtype=torch.long) if activation == "sigmoid" else (raw <= 0).sum()
