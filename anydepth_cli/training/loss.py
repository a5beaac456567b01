"""The training loss: scale-and-shift-invariant error plus multi-scale gradient matching, in the target space.

Per image, over its valid pixels (both maps are in the target space: depth, or disparity = 1/depth):

1. The target t is normalised to median 0 and mean absolute deviation 1: t̂ = (t − med(t)) / mean|t − med(t)|,
   so the loss does not depend on the units or range of the ground truth.
2. The prediction p is aligned to t̂ by the least-squares scale s and shift b (`fit_scale_shift_batch`,
   the batched form of `inference.align.fit_scale_shift`): r = s·p + b − t̂.
3. L_ssi = mean r² (scale-and-shift-invariant MSE).
4. L_grad = Σ_{k=0..3} (Σ |∂x r_k| + Σ |∂y r_k|) / (valid pixels of r_k), with r_k = r sampled every 2^k pixels
   and a difference counted only where both its pixels are valid (multi-scale gradient matching).
5. L = L_ssi + GRADIENT_WEIGHT · L_grad.

The batch loss is the mean of the per-image losses (an image without two valid pixels counts 0), so it does
not depend on how a batch is split across processes or accumulation steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GRADIENT_WEIGHT = 0.5
GRADIENT_SCALES = 4


@dataclass(frozen=True)
class LossTerms:
    """The batch loss and its two terms (each a batch mean of per-image values)."""

    total: torch.Tensor
    ssi: torch.Tensor
    gradient: torch.Tensor


def fit_scale_shift_batch(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image least-squares (scale, shift) minimising Σ w·(scale·pred + shift − target)², for (B, …) maps.

    The same rule as `inference.align.fit_scale_shift`: an image whose prediction has no spread gets scale 1
    and the shift of the means; one with no weight gets (1, 0).
    """
    w = weight.flatten(1).to(pred.dtype)
    p, t = pred.flatten(1), target.flatten(1)
    count = w.sum(1)
    safe = count.clamp_min(1e-12)
    mean_p, mean_t = (w * p).sum(1) / safe, (w * t).sum(1) / safe
    dp, dt = p - mean_p[:, None], t - mean_t[:, None]
    var = (w * dp * dp).sum(1)
    flat = var <= 1e-12 * count.clamp_min(1.0)
    scale = torch.where(flat, torch.ones_like(var), (w * dp * dt).sum(1) / torch.where(flat, torch.ones_like(var), var))
    shift = mean_t - scale * mean_p
    empty = count <= 0
    return torch.where(empty, torch.ones_like(scale), scale), torch.where(empty, torch.zeros_like(shift), shift)


def normalise_target(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each (H, W) target shifted to median 0 and scaled to mean absolute deviation 1 over its valid pixels."""
    flat = torch.where(valid, target, torch.nan).flatten(1)
    median = flat.nanmedian(1).values.nan_to_num(0.0)
    spread = torch.where(valid.flatten(1), (flat - median[:, None]).abs(), 0.0).sum(1)
    spread = spread / valid.flatten(1).sum(1).clamp_min(1)
    out = (target - median[:, None, None]) / spread.clamp_min(1e-6)[:, None, None]
    return torch.where(valid, out, 0.0)


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
    """The loss of (B, H, W) predictions against targets in the same space over `valid` (see the module docstring)."""
    dtype = torch.promote_types(pred.dtype, torch.float32)
    pred, target = pred.to(dtype), target.to(dtype)
    usable = valid.flatten(1).sum(1) >= 2
    valid = valid & usable[:, None, None]
    normalised = normalise_target(target, valid)
    scale, shift = fit_scale_shift_batch(pred, normalised, valid)
    residual = torch.where(valid, scale[:, None, None] * pred + shift[:, None, None] - normalised, 0.0)
    ssi = (residual * residual).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)
    gradient = gradient_matching(residual, valid)
    per_image = ssi + GRADIENT_WEIGHT * gradient
    return LossTerms(per_image.mean(), ssi.mean(), gradient.mean())
