"""Evaluation presets: which ground-truth pixels are scored (crop, depth range) and where predictions are clipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from anydepth_cli.errors import InputError, UsageError

CropFn = Callable[[int, int], tuple[slice, slice]]
"""`(height, width) -> (row slice, column slice)` of the region that is scored."""


def region_mask(shape: tuple[int, ...], region: CropFn) -> np.ndarray:
    """The pixels of an image of `shape` (height, width) inside `region`."""
    rows, cols = region(shape[0], shape[1])
    inside = np.zeros(shape[:2], dtype=bool)
    inside[rows, cols] = True
    return inside


def nyu_crop(height: int, width: int) -> tuple[slice, slice]:
    """Eigen crop: rows 45:471, columns 41:601 of a 480×640 frame (scaled proportionally for other sizes)."""
    return (
        slice(round(45 * height / 480), round(471 * height / 480)),
        slice(round(41 * width / 640), round(601 * width / 640)),
    )


def kitti_crop(height: int, width: int) -> tuple[slice, slice]:
    """Garg crop: rows 0.40810811·H : 0.99189189·H, columns 0.03594771·W : 0.96405229·W."""
    return (
        slice(int(0.40810811 * height), int(0.99189189 * height)),
        slice(int(0.03594771 * width), int(0.96405229 * width)),
    )


@dataclass(frozen=True)
class Preset:
    """How a dataset is scored: which ground-truth depths count and where the predicted depth is clipped.

    `min_depth`/`max_depth` of None mean "take them from each image's valid ground truth".
    `depth_scale` is the default divisor for 16-bit PNG ground truth (value / scale = metres).
    """

    name: str
    min_depth: float | None
    max_depth: float | None
    crop: CropFn | None
    depth_scale: float = 1000.0

    def valid_mask(self, gt_depth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Pixels to score: finite GT > 0, strictly inside (min_depth, max_depth), inside the crop and `mask`."""
        gt = np.asarray(gt_depth)
        valid = np.isfinite(gt) & (gt > 0)
        if self.min_depth is not None:
            valid &= gt > self.min_depth
        if self.max_depth is not None:
            valid &= gt < self.max_depth
        if self.crop is not None:
            valid &= region_mask(gt.shape, self.crop)
        if mask is not None:
            if mask.shape != gt.shape:
                raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]} but depth is {gt.shape[1]}x{gt.shape[0]}")
            valid &= np.asarray(mask, dtype=bool)
        return valid

    def depth_range(self, gt_depth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
        """`(min_depth, max_depth)` for clipping: the preset's, or the valid ground truth's extent where unset."""
        values = np.asarray(gt_depth, dtype=np.float64)[valid]
        low = self.min_depth if self.min_depth is not None else float(values.min())
        high = self.max_depth if self.max_depth is not None else float(values.max())
        return low, high


NYU = Preset("nyu", 1e-3, 10.0, nyu_crop, depth_scale=1000.0)
KITTI = Preset("kitti", 1e-3, 80.0, kitti_crop, depth_scale=256.0)
DEFAULT = Preset("default", None, None, None, depth_scale=1000.0)
PRESETS: dict[str, Preset] = {p.name: p for p in (NYU, KITTI, DEFAULT)}


def check_depth_scale(depth_scale: float | None) -> None:
    """UsageError for a --depth-scale that is given and not positive."""
    if depth_scale is not None and not depth_scale > 0:
        raise UsageError(f"--depth-scale must be positive, got {depth_scale}")


def get_preset(name: str) -> Preset:
    """The preset called `name` (case-insensitive); UsageError listing the choices otherwise."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown eval preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
