"""Anchoring a relative model's map to a metric model's map of the same photo: metres with the relative map's detail.

The scale and shift are fitted in the relative model's own space (depth against the metric depth, disparity against
its inverse), robustly, over the pixels both maps trust: valid in both, not at the metric model's range limit, and
off the metric map's depth edges (where the two models' blurs differ).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anydepth_cli.geometry.pointcloud import edge_mask
from anydepth_cli.inference.align import Affine, robust_fit_scale_shift
from anydepth_cli.models.config import space_of

EDGE_THRESHOLD = 0.05
"""Relative depth jump to a neighbour beyond which a metric pixel is on an edge and left out of the fit."""
RANGE_END = 0.99
"""Metric values at or above this fraction of `max_depth` sit at the range's end and are left out of the fit."""


@dataclass(frozen=True)
class AnchorFit:
    """The fit of a relative map of `kind` onto metric depth: `affine` in the relative map's space, its residual
    (median |anchored − metric| / metric over the pixels used) and the share of the valid pixels it used."""

    kind: str
    affine: Affine
    residual: float
    used: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The relative map in metres (float32; NaN where the fit gives no positive depth)."""
        fitted = self.affine.apply(np.asarray(values, dtype=np.float32))
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = fitted if space_of(self.kind) == "depth" else np.float32(1.0) / fitted
        return np.where(np.isfinite(depth) & (depth > 0) & (values > 0), depth, np.float32(np.nan))

    def describe(self) -> str:
        return (f"{self.kind} × {self.affine.scale:.4g} + {self.affine.shift:.4g} "
                f"({'metres' if space_of(self.kind) == 'depth' else '1/metres'}); residual {100 * self.residual:.1f}% "
                f"over {100 * self.used:.0f}% of the pixels")

    def record(self) -> dict[str, float | str]:
        """The fit as JSON-ready values."""
        return {"space": space_of(self.kind), "scale": self.affine.scale, "shift": self.affine.shift,
                "residual_abs_rel": self.residual, "share_used": self.used}


def fit_anchor(relative: np.ndarray, kind: str, metric: np.ndarray, max_depth: float | None) -> AnchorFit:
    """Fit the relative map (of `kind`) to the metric map (metres, range up to `max_depth`) of the same photo."""
    relative = np.asarray(relative, dtype=np.float32)
    metric = np.asarray(metric, dtype=np.float32)
    valid = np.isfinite(relative) & (relative > 0) & np.isfinite(metric) & (metric > 0)
    trusted = valid & ~edge_mask(metric, EDGE_THRESHOLD)
    if max_depth is not None:
        trusted &= metric < RANGE_END * max_depth
    target = metric if space_of(kind) == "depth" else np.float32(1.0) / np.where(metric > 0, metric, 1)
    if np.count_nonzero(trusted) < 2:
        return AnchorFit(kind, Affine(1.0, 0.0), float("nan"), 0.0)
    affine, inliers = robust_fit_scale_shift(relative[trusted], target[trusted])
    fit = AnchorFit(kind, affine, 0.0, float(np.count_nonzero(inliers)) / max(1, int(np.count_nonzero(valid))))
    anchored = fit.apply(relative[trusted][inliers])
    truth = metric[trusted][inliers]
    residual = float(np.nanmedian(np.abs(anchored - truth) / truth)) if anchored.size else float("nan")
    return AnchorFit(kind, affine, residual, fit.used)
