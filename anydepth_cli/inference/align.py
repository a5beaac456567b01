"""Scale-and-shift alignment of affine-invariant maps (depth or disparity, in whichever space they are given)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Affine:
    """`scale * x + shift`, the map that brings a prediction onto a reference."""

    scale: float
    shift: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.shift).astype(np.float32, copy=False)


def fit_scale_shift(
    pred: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
) -> Affine:
    """Weighted least-squares `scale, shift` minimising sum w * (scale*pred + shift - target)^2."""
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    w = np.ones_like(p) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    ok = np.isfinite(p) & np.isfinite(t) & (w > 0)
    p, t, w = p[ok], t[ok], w[ok]
    sw = w.sum()
    if sw <= 0:
        return Affine(1.0, 0.0)
    mp, mt = (w * p).sum() / sw, (w * t).sum() / sw
    var = (w * (p - mp) ** 2).sum()
    if var <= 1e-12 * max(sw, 1.0):
        return Affine(1.0, float(mt - mp))
    scale = (w * (p - mp) * (t - mt)).sum() / var
    return Affine(float(scale), float(mt - scale * mp))


def robust_fit_scale_shift(
    pred: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray | None = None,
    iterations: int = 4,
    cutoff: float = 3.0,
) -> tuple[Affine, np.ndarray]:
    """Scale-and-shift fit that rejects outliers.

    Re-fits `iterations` times, each time dropping samples whose residual exceeds `cutoff`
    times the robust (MAD) spread of the residuals. Returns the fit and the inlier mask.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = np.ones_like(p) if weight is None else np.asarray(weight, dtype=np.float64)
    inlier = np.isfinite(p) & np.isfinite(t) & (w > 0)
    fit = fit_scale_shift(p, t, np.where(inlier, w, 0.0))
    for _ in range(iterations):
        residual = np.abs(fit.scale * p + fit.shift - t)
        spread = 1.4826 * np.median(residual[inlier]) if inlier.any() else 0.0
        if spread <= 1e-12:
            break
        keep = inlier & (residual <= cutoff * spread)
        if keep.sum() < 2 or np.array_equal(keep, inlier):
            break
        inlier = keep
        fit = fit_scale_shift(p, t, np.where(inlier, w, 0.0))
    return fit, inlier
