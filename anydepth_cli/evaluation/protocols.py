"""How the field scores the five zero-shot benchmarks (the protocol of Marigold's evaluation, prs-eth/Marigold).

Per image:

1. `prepare`: KITTI's image and depth are first cut to the benchmark crop (352×1216, bottom rows, centred).
   A ground-truth pixel is valid where the set's decoder says it was measured and min < depth < max, inside
   the scored region (NYU: the Eigen crop; KITTI: the Eigen mask); on DIODE the published mask alone decides.
2. `score`: the prediction (the model's raw output at the ground truth's size) is fitted by least squares,
   scale and shift over the valid pixels, in its own space: to the depth for depth models; to the inverse
   depth for disparity models, leaving out pixels whose ground truth or prediction is not positive, the
   aligned disparity then clipped at `DISPARITY_FLOOR` and inverted. ETH3D's fit reads the columns that
   torch's nearest-neighbour `interpolate(scale_factor=s)`, s = min(1024/H, 1024/W), keeps of the
   (1, H, W) ground truth, prediction and mask: the reference passes them as a 3-D tensor, which
   interpolate treats as one batch of H rows of length W, so only the columns are thinned. The fit is then
   applied at full resolution. The aligned depth is clipped to [min, max] and to at least `DEPTH_FLOOR`.
3. AbsRel = mean |p − g| / g, δk = share with max(p/g, g/p) < 1.25^k, RMSE, over the valid pixels, against
   the raw ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anydepth_cli.errors import InputError
from anydepth_cli.evaluation.metrics import UNALIGNED, metric_sums, metrics_from_sums
from anydepth_cli.evaluation.presets import CropFn, region_mask
from anydepth_cli.inference.align import Affine, fit_scale_shift
from anydepth_cli.models.config import SPACES

DISPARITY_FLOOR = 1e-3
"""The least aligned disparity, so that it can be inverted."""
DEPTH_FLOOR = 1e-6
"""The least aligned depth scored."""
CHUNK_PIXELS = 1 << 20
"""Pixels scored at a time: the float64 temporaries of a 24-megapixel image stay small."""


def nyu_eigen_crop(height: int, width: int) -> tuple[slice, slice]:
    """Rows 45:471, columns 41:601 (of NYU's 480×640 frames)."""
    return slice(45, 471), slice(41, 601)


def kitti_benchmark_crop(height: int, width: int) -> tuple[slice, slice]:
    """The KITTI benchmark's 352×1216: the bottom 352 rows, 1216 columns centred."""
    top, left = height - 352, (width - 1216) // 2
    if top < 0 or left < 0:
        raise InputError(f"a {width}x{height} KITTI frame is smaller than the benchmark crop 1216x352")
    return slice(top, top + 352), slice(left, left + 1216)


def kitti_eigen_mask(height: int, width: int) -> tuple[slice, slice]:
    """Eigen et al.'s evaluation region of a (cropped) KITTI frame."""
    return (slice(int(0.3324324 * height), int(0.91351351 * height)),
            slice(int(0.0359477 * width), int(0.96405229 * width)))


def nearest_columns(height: int, width: int, max_side: int) -> np.ndarray | None:
    """The columns torch's nearest `interpolate(scale_factor=s)` keeps of a (1, H, W) tensor,
    s = min(max_side/H, max_side/W); None when s ≥ 1 (no thinning)."""
    scale = min(max_side / height, max_side / width)
    if scale >= 1:
        return None
    count = math.floor(width * scale)
    # torch computes the source index in float32 from the reciprocal of the given scale factor
    step = np.float32(1.0 / scale)
    return np.minimum(np.floor(np.arange(count, dtype=np.float32) * step).astype(np.int64), width - 1)


@dataclass(frozen=True)
class Protocol:
    """One set's scoring rules (see the module docstring)."""

    name: str
    min_depth: float
    max_depth: float
    region: CropFn | None = None
    crop: CropFn | None = None
    fit_max_side: int | None = None
    mask_only: bool = False

    def prepare(self, rgb: np.ndarray, depth: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The photo and ground truth as scored (KITTI's crop) and the valid pixels; InputError with fewer than two."""
        if self.crop is not None:
            rows, cols = self.crop(*depth.shape)
            rgb_rows, rgb_cols = self.crop(*rgb.shape[:2])
            rgb, depth, measured = np.ascontiguousarray(rgb[rgb_rows, rgb_cols]), depth[rows, cols], measured[rows, cols]
        valid = np.array(measured, dtype=bool)
        if not self.mask_only:
            valid &= (depth > self.min_depth) & (depth < self.max_depth)
        if self.region is not None:
            valid &= region_mask(depth.shape, self.region)
        if int(valid.sum()) < 2:
            raise InputError(f"fewer than two valid ground-truth pixels under the {self.name} protocol")
        return rgb, depth, valid

    def fit(self, pred: np.ndarray, depth: np.ndarray, valid: np.ndarray, kind: str) -> Affine:
        """The least-squares scale and shift of `pred` (the model's `kind`) onto the ground truth in that space."""
        if self.fit_max_side is not None:
            columns = nearest_columns(*depth.shape, self.fit_max_side)
            if columns is not None:
                pred, depth, valid = pred[:, columns], depth[:, columns], valid[:, columns]
        if kind == UNALIGNED:
            return Affine(1.0, 0.0)
        if kind == "depth":
            return fit_scale_shift(pred[valid], depth[valid])
        use = valid & (depth > 0) & (pred > 0)
        return fit_scale_shift(pred[use], 1.0 / depth[use].astype(np.float64))

    def aligned_depth(self, values: np.ndarray, fit: Affine, kind: str) -> np.ndarray:
        """Raw predictions (float64) brought onto the ground truth's depth, clipped as the protocol says."""
        aligned = fit.scale * values + fit.shift
        if kind == "disparity":
            aligned = 1.0 / np.maximum(aligned, DISPARITY_FLOOR)
        return np.maximum(np.clip(aligned, self.min_depth, self.max_depth), DEPTH_FLOOR)

    def score(self, pred: np.ndarray, depth: np.ndarray, valid: np.ndarray, kind: str) -> dict[str, float]:
        """AbsRel, δ1–δ3, RMSE, the fitted `scale` and `shift` and `n_valid` of one prediction of `kind`."""
        if kind not in (*SPACES, UNALIGNED):
            raise ValueError(f"kind must be one of {', '.join(SPACES)} or {UNALIGNED}, not {kind!r}")
        if pred.shape != depth.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {depth.shape} differ in size")
        fit = self.fit(pred, depth, valid, kind)
        sums = np.zeros(5)
        step = max(1, CHUNK_PIXELS // depth.shape[1])
        for top in range(0, depth.shape[0], step):
            inside = valid[top: top + step]
            g = depth[top: top + step][inside].astype(np.float64)
            p = self.aligned_depth(pred[top: top + step][inside].astype(np.float64), fit, kind)
            sums += metric_sums(p, g)
        count = int(valid.sum())
        return {**metrics_from_sums(sums, count), "scale": fit.scale, "shift": fit.shift, "n_valid": count}


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("nyu", 1e-3, 10.0, region=nyu_eigen_crop),
    Protocol("kitti", 1e-5, 80.0, region=kitti_eigen_mask, crop=kitti_benchmark_crop),
    Protocol("eth3d", 1e-5, math.inf, fit_max_side=1024),
    Protocol("scannet", 1e-3, 10.0),
    Protocol("diode", 0.6, 350.0, mask_only=True),
)}
"""The protocol of each benchmark, by its name in `datasets.registry.BENCHMARKS`."""
