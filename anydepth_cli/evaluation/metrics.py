"""Zero-shot affine-invariant depth metrics: align a prediction to ground truth in the model's own space, then score.

A model predicts affine-invariant depth (large = far) or disparity (large = near); its output
kind says which. Protocol, per image:

1. Valid pixels: the preset's crop and depth range, intersected with the sample's own mask.
2. The prediction is brought onto the ground truth in its own space by a least-squares scale
   and shift fitted over the valid pixels (`fit_scale_shift`):

   * depth: onto the ground-truth depth; the aligned depth is clipped to `[min_depth, max_depth]`;
   * disparity: onto `1 / depth`; the aligned disparity is clamped to at least `1 / max_depth`
     (so it stays positive), inverted to depth and clipped to `[min_depth, max_depth]`.

3. AbsRel, δ1/δ2/δ3 and RMSE are computed over the valid pixels.

A dataset's score is the mean of the per-image scores (`aggregate`), not a pixel-pooled mean.
Aligning the same predictions both ways and comparing the AbsRels (`KindCheck`) tells which
kind a model's output really is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from anydepth_cli.errors import InputError
from anydepth_cli.evaluation.presets import Preset
from anydepth_cli.inference.align import Affine, fit_scale_shift
from anydepth_cli.models.config import SPACES

METRICS: tuple[str, ...] = ("abs_rel", "delta1", "delta2", "delta3", "rmse")
"""Metric keys, in report order. AbsRel and RMSE: lower is better; δk: higher is better."""

HIGHER_IS_BETTER: frozenset[str] = frozenset({"delta1", "delta2", "delta3"})

KINDS = SPACES
"""The spaces a prediction can be aligned in: the output kinds a model declares."""
UNALIGNED = "none"
"""Scoring a metric prediction as it is, in metres: no scale or shift fitted."""


def align_and_convert(
    pred: np.ndarray,
    gt_depth: np.ndarray,
    valid: np.ndarray,
    min_depth: float,
    max_depth: float,
    kind: str,
) -> tuple[np.ndarray, Affine]:
    """Align `pred`, of output `kind` (depth or disparity), to `gt_depth` over `valid`; return the aligned depth (float64) and the fit.

    With `kind` UNALIGNED the prediction is metric depth, taken as it is (the fit is the identity) and clipped.
    A depth prediction is fitted to `gt_depth` and clipped to `[min_depth, max_depth]`; a disparity
    prediction is fitted to `1 / gt_depth`, clamped to `>= 1 / max_depth`, inverted and clipped.
    Arithmetic is in float64 so an exact affine relation is recovered to rounding error.
    ValueError for an unknown `kind` or mismatched shapes.
    """
    if kind not in (*KINDS, UNALIGNED):
        raise ValueError(f"kind must be one of {', '.join(KINDS)} or {UNALIGNED}, not {kind!r}")
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt_depth, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if pred.shape != gt.shape or valid.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape}, depth {gt.shape}, mask {valid.shape}")
    if kind == UNALIGNED:
        fit, depth = Affine(1.0, 0.0), pred
    elif kind == "depth":
        fit = fit_scale_shift(pred[valid], gt[valid])
        depth = fit.scale * pred + fit.shift
    else:
        fit = fit_scale_shift(pred[valid], 1.0 / gt[valid])
        depth = 1.0 / np.maximum(fit.scale * pred + fit.shift, 1.0 / max_depth)
    return np.clip(depth, min_depth, max_depth), fit


def metric_sums(pred_depth: np.ndarray, gt_depth: np.ndarray) -> np.ndarray:
    """The sums behind `METRICS` over paired pixels (float64, gt > 0): Σ|d − g|/g, the counts of
    max(d/g, g/d) < 1.25**k for k = 1, 2, 3, and Σ(d − g)², so that a large image can be summed in parts."""
    d, g = np.asarray(pred_depth, dtype=np.float64), np.asarray(gt_depth, dtype=np.float64)
    ratio = np.maximum(d / g, g / d)
    return np.array([np.sum(np.abs(d - g) / g), np.sum(ratio < 1.25), np.sum(ratio < 1.25**2),
                     np.sum(ratio < 1.25**3), np.sum((d - g) ** 2)])


def metrics_from_sums(sums: np.ndarray, count: int) -> dict[str, float]:
    """`METRICS` from the `metric_sums` of `count` pixels."""
    abs_rel, delta1, delta2, delta3, squares = (float(value) for value in sums / count)
    return {"abs_rel": abs_rel, "delta1": delta1, "delta2": delta2, "delta3": delta3, "rmse": math.sqrt(squares)}


def depth_metrics(pred_depth: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """AbsRel, δ1, δ2, δ3 and RMSE of `pred_depth` against `gt_depth` over `mask` (gt must be > 0 there).

    AbsRel = mean(|d - g| / g); δk = fraction of pixels with max(d/g, g/d) < 1.25**k;
    RMSE = sqrt(mean((d - g)**2)).
    """
    mask = np.asarray(mask, dtype=bool)
    g = np.asarray(gt_depth)[mask]
    if g.size == 0:
        raise ValueError("no pixels to score")
    return metrics_from_sums(metric_sums(np.asarray(pred_depth)[mask], g), g.size)


def evaluate_sample(
    pred: np.ndarray,
    gt_depth: np.ndarray,
    mask: np.ndarray | None,
    preset: Preset,
    kind: str,
) -> dict[str, float]:
    """Score one prediction of `kind` (depth or disparity) against its ground-truth depth under `preset`.

    Returns the `METRICS` plus `scale` and `shift` (the fitted alignment) and `n_valid` (pixels
    scored). Raises InputError when fewer than two pixels are valid.
    """
    gt = np.asarray(gt_depth, dtype=np.float64)
    valid = preset.valid_mask(gt, mask)
    n_valid = int(valid.sum())
    if n_valid < 2:
        raise InputError(f"only {n_valid} valid ground-truth pixel(s) under preset {preset.name!r}")
    min_depth, max_depth = preset.depth_range(gt, valid)
    pred_depth, fit = align_and_convert(pred, gt, valid, min_depth, max_depth, kind)
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


@dataclass(frozen=True)
class KindCheck:
    """Mean AbsRel of one model's predictions aligned as depth and as disparity: which kind the data supports."""

    abs_rel_depth: float
    abs_rel_disparity: float

    @property
    def detected(self) -> str | None:
        """The kind with the lower AbsRel; None on a tie or when either is NaN."""
        if math.isnan(self.abs_rel_depth) or math.isnan(self.abs_rel_disparity):
            return None
        if self.abs_rel_depth == self.abs_rel_disparity:
            return None
        return "depth" if self.abs_rel_depth < self.abs_rel_disparity else "disparity"

    @property
    def ratio(self) -> float:
        """AbsRel of the other kind over that of the detected kind (at least 1; inf when the detected one is 0; NaN when undecided)."""
        if self.detected is None:
            return math.nan
        low, high = sorted((self.abs_rel_depth, self.abs_rel_disparity))
        return high / low if low > 0 else math.inf
