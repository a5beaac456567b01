"""Unit normals of the points of a depth map, from the depth of each pixel's neighbours."""

from __future__ import annotations

import numpy as np

from anydepth_cli.geometry.camera import Intrinsics, unproject_pixels


def surface_normals(
    depth: np.ndarray, intrinsics: Intrinsics, rows: np.ndarray, cols: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Unit normals (camera frame) of the pixels (rows, cols) whose points are ``points``."""
    height, width = depth.shape
    flat = depth.ravel()
    z = points[:, 2]
    index = rows * width + cols
    tangents = []
    for coord, size, step in ((cols, width, 1), (rows, height, width)):
        ahead = np.where(coord + 1 < size, index + step, index)
        behind = np.where(coord > 0, index - step, index)
        gap_ahead = np.abs(flat[ahead] - z)
        gap_behind = np.abs(flat[behind] - z)
        gap_ahead[(ahead == index) | np.isnan(gap_ahead)] = np.inf
        gap_behind[(behind == index) | np.isnan(gap_behind)] = np.inf
        forward = gap_ahead <= gap_behind
        central = (
            np.isfinite(gap_ahead)
            & np.isfinite(gap_behind)
            & (gap_ahead <= 2 * gap_behind)
            & (gap_behind <= 2 * gap_ahead)
        )
        start = np.where(central | ~forward, behind, index)
        end = np.where(central | forward, ahead, index)
        del ahead, behind, gap_ahead, gap_behind, forward, central
        tangents.append(
            unproject_pixels(*np.divmod(end, width), flat[end], intrinsics)
            - unproject_pixels(*np.divmod(start, width), flat[start], intrinsics)
        )
    normal = np.cross(tangents[0], tangents[1])
    del tangents
    length = np.linalg.norm(normal, axis=1)
    usable = np.isfinite(length) & (length > 0)
    normal[usable] /= length[usable, None]
    normal[~usable] = -points[~usable] / np.linalg.norm(points[~usable], axis=1, keepdims=True)
    away = np.einsum("ij,ij->i", normal, points) > 0
    normal[away] *= -1
    return normal.astype(np.float32, copy=False)
