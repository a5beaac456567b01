"""Zero-shot affine-invariant depth metrics: align predicted disparity to ground truth, then score.

Protocol, per image:

1. Valid pixels: the preset's crop and depth range, intersected with the sample's own mask.
2. Ground-truth disparity is `1 / depth` on valid pixels.
3. The predicted disparity is brought onto it by a least-squares scale and shift fitted over
   the valid pixels (`fit_scale_shift`).
4. The aligned disparity is clamped to at least `1 / max_depth` (so it stays positive),
   inverted to depth and clipped to `[min_depth, max_depth]`.
5. AbsRel, δ1/δ2/δ3 and RMSE are computed over the valid pixels.

A dataset's score is the mean of the per-image scores (`aggregate`), not a pixel-pooled mean.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from anydepth_cli.errors import InputError
from anydepth_cli.evaluation.presets import Preset
from anydepth_cli.inference.align import Affine, fit_scale_shift

METRICS: tuple[str, ...] = ("abs_rel", "delta1", "delta2", "delta3", "rmse")
"""Metric keys, in report order. AbsRel and RMSE: lower is better; δk: higher is better."""

HIGHER_IS_BETTER: frozenset[str] = frozenset({"delta1", "delta2", "delta3"})


def align_and_convert(
    pred_disparity: np.ndarray,
    gt_depth: np.ndarray,
    valid: np.ndarray,
    min_depth: float,
    max_depth: float,
) -> tuple[np.ndarray, Affine]:
    """Fit `pred_disparity` to `1 / gt_depth` over `valid`; return the aligned depth map (float64) and the fit.

    The aligned disparity is clamped to `>= 1 / max_depth` before inversion and the depth is
    clipped to `[min_depth, max_depth]`. Arithmetic is in float64 so an exact affine
    relation is recovered to rounding error.
    """
    pred = np.asarray(pred_disparity, dtype=np.float64)
    gt = np.asarray(gt_depth, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if pred.shape != gt.shape or valid.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape}, depth {gt.shape}, mask {valid.shape}")
    fit = fit_scale_shift(pred[valid], 1.0 / gt[valid])
    aligned = np.maximum(fit.scale * pred + fit.shift, 1.0 / max_depth)
    depth = np.clip(1.0 / aligned, min_depth, max_depth)
    return depth, fit


def depth_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """AbsRel, δ1, δ2, δ3 and RMSE of `pred_depth` against `gt_depth` over `mask` (gt must be > 0 there).

    AbsRel = mean(|d - g| / g); δk = fraction of pixels with max(d/g, g/d) < 1.25**k;
    RMSE = sqrt(mean((d - g)**2)).
    """
    mask = np.asarray(mask, dtype=bool)
    d = np.asarray(pred_depth, dtype=np.float64)[mask]
    g = np.asarray(gt_depth, dtype=np.float64)[mask]
    if g.size == 0:
        raise ValueError("no pixels to score")
    ratio = np.maximum(d / g, g / d)
    return {
        "abs_rel": float(np.mean(np.abs(d - g) / g)),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "rmse": float(np.sqrt(np.mean((d - g) ** 2))),
    }


def evaluate_sample(
    pred_disparity: np.ndarray,
    gt_depth: np.ndarray,
    mask: np.ndarray | None,
    preset: Preset,
) -> dict[str, float]:
    """Score one predicted disparity map against its ground-truth depth under `preset`.

    Returns the `METRICS` plus `scale` and `shift` (the fitted alignment) and `n_valid` (pixels
    scored). Raises InputError when fewer than two pixels are valid.
    """
    gt = np.asarray(gt_depth, dtype=np.float64)
    valid = preset.valid_mask(gt, mask)
    n_valid = int(valid.sum())
    if n_valid < 2:
        raise InputError(f"only {n_valid} valid ground-truth pixel(s) under preset {preset.name!r}")
    min_depth, max_depth = preset.depth_range(gt, valid)
    pred_depth, fit = align_and_convert(pred_disparity, gt, valid, min_depth, max_depth)
    row = depth_metrics(pred_depth, gt, valid)
    row.update(scale=fit.scale, shift=fit.shift, n_valid=n_valid)
    return row


def aggregate(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean over images of each metric in `METRICS` (every image weighs the same), plus `n_images`.

    With no rows every metric is NaN.
    """
    columns: dict[str, list[float]] = {key: [] for key in METRICS}
    count = 0
    for row in rows:
        count += 1
        for key in METRICS:
            columns[key].append(float(row[key]))
    out = {key: (float(np.mean(values)) if values else math.nan) for key, values in columns.items()}
    out["n_images"] = count
    return out
