"""Voxel downsampling of point clouds: the voxel size that meets a point count, and per-voxel averages."""

from __future__ import annotations

import math

import numpy as np


def _voxel_keys(points: np.ndarray, origin: np.ndarray, size: float) -> np.ndarray:
    """One int64 key per point naming its cube of side ``size`` in a grid anchored at ``origin``."""
    keys = np.zeros(len(points), dtype=np.int64)
    for axis in range(3):
        cell = ((points[:, axis] - origin[axis]) / np.float32(size)).astype(np.int64)
        keys *= int(cell.max()) + 1
        keys += cell
    return keys


def _voxel_count(points: np.ndarray, origin: np.ndarray, size: float) -> int:
    keys = np.sort(_voxel_keys(points, origin, size))  # a sort is far faster than np.unique here
    return int(np.count_nonzero(keys[1:] != keys[:-1])) + 1


def voxel_size(points: np.ndarray, target: int) -> float:
    """A voxel size whose voxel count is at most ``target`` and, where the search allows,
    within 5 % of it."""
    origin = points.min(axis=0)
    extent = np.sort((points.max(axis=0) - origin).astype(np.float64))
    if extent[2] <= 0:
        return 1.0
    infeasible = extent[2] / 2.0**20  # keys stay below 2**63 for any size above this
    feasible = extent[2] * 1.001  # one voxel holds everything
    # Secant steps on log(count) against log(size), aiming just under the target; a depth
    # map is a surface, so the count starts out going as 1 / size**2.
    aim = 0.975 * target
    size = max(math.sqrt(extent[1] * extent[2] / target), infeasible * 2)
    slope, previous = -2.0, None
    for _ in range(40):
        count = _voxel_count(points, origin, size)
        if count > target:
            infeasible = size
        else:
            feasible = size
            if count >= 0.95 * target:
                break
        if feasible <= infeasible * 1.001:
            break
        if previous is not None and previous[1] != count:
            slope = min(math.log(count / previous[1]) / math.log(size / previous[0]), -0.1)
        previous = size, count
        size *= (aim / count) ** (1 / slope)
        if not infeasible < size < feasible:
            size = math.sqrt(infeasible * feasible)
    return feasible


def voxel_average(
    points: np.ndarray, colors: np.ndarray, normals: np.ndarray | None, size: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-voxel mean point and colour, and renormalised mean normal."""
    keys = _voxel_keys(points, points.min(axis=0), size)
    order = np.argsort(keys)
    keys = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    counts = np.diff(np.append(starts, len(keys)))[:, None]
    del keys

    def total(values: np.ndarray, dtype: type) -> np.ndarray:
        return np.add.reduceat(values[order], starts, axis=0, dtype=dtype)

    mean_points = total(points, np.float32) / counts.astype(np.float32)
    mean_colors = ((total(colors, np.uint32) + counts // 2) // counts).astype(np.uint8)
    if normals is None:
        return mean_points, mean_colors, None
    summed = total(normals, np.float32)
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    cancelled = length[:, 0] == 0  # opposite normals in one voxel: face the camera instead
    summed[cancelled] = -mean_points[cancelled]
    length[cancelled] = np.linalg.norm(mean_points[cancelled], axis=1, keepdims=True)
    return mean_points, mean_colors, (summed / length).astype(np.float32)
