"""A coloured triangle mesh of a depth map: pixels (every `stride`-th) as vertices, two triangles per square of
four neighbours, none across a depth discontinuity.

Depth comes from the map as for point clouds (`depth_rule.scene_depth`: metres for metric maps, else `near`/`far`
or `depth_at`); the frame is "opengl" (x right, y up, z toward the viewer) or "opencv" (x right, y down, z
forward), the camera at the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anydepth_cli.geometry.camera import Intrinsics, unproject_pixels
from anydepth_cli.geometry.depth_rule import scene_depth
from anydepth_cli.geometry.pointcloud import flip_to_opengl

DEFAULT_EDGE_THRESHOLD = 0.05


@dataclass
class Mesh:
    """Vertices (N×3 float32), their colours (N×3 uint8), triangles (M×3 int32 vertex indices, counter-clockwise
    seen from the camera) and a one-line description of how the mesh was made."""

    vertices: np.ndarray
    colors: np.ndarray
    faces: np.ndarray
    description: str


def build_mesh(rgb: np.ndarray, values: np.ndarray, intrinsics: Intrinsics, *, kind: str,
               near: float | None = None, far: float | None = None,
               depth_at: tuple[int, int, float] | None = None,
               edge_threshold: float | None = DEFAULT_EDGE_THRESHOLD, max_vertices: int | None = 2_000_000,
               sky_fraction: float | None = 0.02, frame: str = "opengl") -> Mesh:
    """The mesh of an H×W×3 uint8 image and its H×W map of `kind`.

    Pixels are taken every `stride` rows and columns, the smallest stride that keeps at most `max_vertices`.
    A triangle is kept when its three corners have a depth and, with `edge_threshold`, when its largest depth
    exceeds its smallest by at most `edge_threshold` × stride of the smallest (a depth discontinuity cuts it).
    """
    v = np.array(values, dtype=np.float32)
    depth, rule, notes = scene_depth(v, kind, near, far, depth_at, sky_fraction)
    height, width = depth.shape
    stride = 1 if max_vertices is None else max(1, math.ceil(math.sqrt(depth.size / max_vertices)))
    rows, cols = np.arange(0, height, stride), np.arange(0, width, stride)
    grid = depth[np.ix_(rows, cols)]
    index = np.full(grid.shape, -1, dtype=np.int64)
    valid = np.isfinite(grid)
    index[valid] = np.arange(np.count_nonzero(valid))
    r, c = np.nonzero(valid)
    vertices = unproject_pixels(rows[r], cols[c], grid[valid], intrinsics)
    colors = np.asarray(rgb)[rows[r], cols[c]]
    faces = _faces(index, grid, None if edge_threshold is None else edge_threshold * stride)
    if frame == "opengl":  # a half-turn about x: the windings still face the camera
        flip_to_opengl(vertices, None)
    sky = "".join(f" ({note} dropped)" for note in notes if note)
    description = (f"{len(vertices):,} vertices and {len(faces):,} triangles from {depth.size:,} pixels "
                   f"(every {stride}){sky}; {rule.description}")
    return Mesh(vertices, colors, faces.astype(np.int32), description)


def _faces(index: np.ndarray, depth: np.ndarray, jump: float | None) -> np.ndarray:
    """Two triangles per 2×2 block of grid vertices: those whose corners all exist and, with `jump`, whose depths
    stay within a factor 1 + `jump` of each other."""
    a, b = index[:-1, :-1], index[:-1, 1:]  # top-left, top-right
    c, d = index[1:, :-1], index[1:, 1:]  # bottom-left, bottom-right
    za, zb, zc, zd = depth[:-1, :-1], depth[:-1, 1:], depth[1:, :-1], depth[1:, 1:]
    triangles = []
    # image y runs down; in the OpenGL frame (y up) these windings are counter-clockwise seen from the camera
    for corners, depths in (((a, c, b), (za, zc, zb)), ((b, c, d), (zb, zc, zd))):
        keep = (corners[0] >= 0) & (corners[1] >= 0) & (corners[2] >= 0)
        if jump is not None:
            with np.errstate(invalid="ignore"):
                low = np.fmin(np.fmin(depths[0], depths[1]), depths[2])
                high = np.fmax(np.fmax(depths[0], depths[1]), depths[2])
                keep &= high <= low * (1 + jump)
        triangles.append(np.stack([corner[keep] for corner in corners], axis=1))
    return np.concatenate(triangles, axis=0)
