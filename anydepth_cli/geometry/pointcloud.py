"""From a network's affine-invariant depth or disparity map to a coloured 3-D point cloud.

Conventions used throughout this module:

* Pixels and the camera frame are those of ``geometry.camera``.
* Output frame of ``build_point_cloud`` is selectable; its default, "opengl" (x right,
  y up, z toward the viewer; the camera looks down -z), opens upright and facing the
  viewer in MeshLab, Blender, CloudCompare and Open3D.
* The kinds of map and the depth they give are those of ``geometry.depth_rule``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anydepth_cli.errors import UsageError
from anydepth_cli.geometry.camera import Intrinsics, unproject_pixels
from anydepth_cli.geometry.depth_rule import check_kind, percent, scene_depth
from anydepth_cli.geometry.normals import surface_normals
from anydepth_cli.geometry.voxels import voxel_average, voxel_size

VOXEL_CANDIDATES_PER_POINT = 4


def edge_mask(depth: np.ndarray, threshold: float) -> np.ndarray:
    """True at flying pixels: where some 4-neighbour's depth differs by more than
    ``threshold`` times the pixel's own depth.

    NaN neighbours are ignored and NaN pixels are never flagged. The test is per pixel, so a
    depth edge blurred over k pixels needs a threshold of roughly 1/k of its relative jump.
    """
    z = np.asarray(depth, dtype=np.float32)
    jump = np.zeros_like(z)
    for axis in (0, 1):
        ahead = [slice(None), slice(None)]
        behind = [slice(None), slice(None)]
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        ahead, behind = tuple(ahead), tuple(behind)
        diff = np.abs(z[ahead] - z[behind])
        np.fmax(jump[ahead], diff, out=jump[ahead])
        np.fmax(jump[behind], diff, out=jump[behind])
        del diff
    with np.errstate(divide="ignore", invalid="ignore"):
        jump /= z
    return jump > threshold


@dataclass
class PointCloud:
    """Points (N×3 float32), their colours (N×3 uint8), unit normals (N×3 float32 or None)
    and a one-line description of how they were made."""

    points: np.ndarray
    colors: np.ndarray
    normals: np.ndarray | None
    description: str


def build_point_cloud(
    rgb: np.ndarray,
    values: np.ndarray,
    intrinsics: Intrinsics,
    *,
    kind: str,
    near: float | None = None,
    far: float | None = None,
    depth_at: tuple[int, int, float] | None = None,
    edge_threshold: float | None = 0.05,
    max_points: int | None = 2_000_000,
    normals: bool = False,
    downsample: str = "voxel",
    seed: int = 0,
    sky_fraction: float | None = 0.02,
    frame: str = "opengl",
) -> PointCloud:
    """Coloured point cloud of an H×W×3 uint8 image and its H×W map of ``kind`` ("depth"
    or "disparity").

    Steps, each reported in ``description``:

    1. Sky: pixels farther than ~1 / ``sky_fraction`` times the near scene are dropped
       (``None`` keeps them): depth above the 1st percentile of the valid depths divided by
       ``sky_fraction``, or disparity below ``sky_fraction`` times the 99th percentile of
       the valid disparities.
    2. Depth from the remaining values by ``near``/``far`` or ``depth_at`` (see
       ``DepthRule.fit``); invalid depths (NaN, inf, non-positive) are dropped.
    3. Flying pixels (``edge_mask`` with ``edge_threshold``; ``None`` keeps them) are dropped.
    4. At most ``max_points`` points (``None``: no limit) are kept: "voxel" averages points,
       colours and normals per cubic voxel, with the voxel size searched so that the count
       just meets the limit (over a seeded random sample of at most 4 × ``max_points``
       pixels); "random" keeps a seeded random subset.

    Normals (``normals=True``) come from the depth map: the cross product of the
    differences between the point's horizontal and between its vertical neighbours, oriented
    toward the camera. On each axis that is the central difference where the depth changes
    to both neighbours agree within a factor of 2 (a smooth surface), else the one-sided
    difference to the neighbour with the smaller depth change, so normals do not straddle
    depth edges. A point without usable neighbours gets the direction to the camera.

    ``frame`` is "opengl" (x right, y up, z toward the viewer) or "opencv" (x right, y
    down, z forward); the camera is at the origin in both.
    """
    _check_settings(kind, max_points, downsample, edge_threshold, sky_fraction, frame)
    v = np.array(values, dtype=np.float32)  # a copy: sky is blanked in it
    rgb = np.asarray(rgb)
    if v.ndim != 2 or rgb.shape != (*v.shape, 3) or rgb.dtype != np.uint8:
        raise ValueError(f"expected H×W {kind} and H×W×3 uint8 image, got {v.shape} and {rgb.dtype} {rgb.shape}")
    width, pixels = v.shape[1], v.size
    depth, rule, notes = scene_depth(v, kind, near, far, depth_at, sky_fraction)
    del v
    index, flying = _kept_pixels(depth, edge_threshold)
    notes += [flying] if flying is not None else []
    index, sampling = _sample(index, max_points, downsample, seed)
    rows, cols = np.divmod(index, width)
    points = unproject_pixels(rows, cols, depth.ravel()[index], intrinsics)
    colors = rgb.reshape(-1, 3)[index]
    normal = surface_normals(depth, intrinsics, rows, cols, points) if normals else None
    del rows, cols, index
    if downsample == "voxel" and max_points is not None and len(points) > max_points:
        size = voxel_size(points, max_points)
        points, colors, normal = voxel_average(points, colors, normal, size)
        sampling += f"; averaged in voxels of {size:.3g}"
    if frame == "opengl":
        flip_to_opengl(points, normal)
    dropped = f" ({', '.join(note for note in notes if note)} dropped)" if any(notes) else ""
    description = (
        f"{len(points):,} points from {pixels:,} pixels{dropped}{sampling}; {rule.description}; "
        f"fx {intrinsics.fx:.1f} px from {intrinsics.source}"
    )
    return PointCloud(points=points, colors=colors, normals=normal, description=description)


def _check_settings(kind: str, max_points: int | None, downsample: str, edge_threshold: float | None,
                    sky_fraction: float | None, frame: str) -> None:
    """UsageError for a setting of `build_point_cloud` out of its range."""
    if downsample not in ("voxel", "random"):
        raise UsageError(f"downsampling must be 'voxel' or 'random', got {downsample!r}")
    if frame not in ("opengl", "opencv"):
        raise UsageError(f"the point cloud frame must be 'opengl' or 'opencv', got {frame!r}")
    if max_points is not None and max_points < 1:
        raise UsageError(f"--max-points must be at least 1, got {max_points}")
    if edge_threshold is not None and not edge_threshold > 0:
        raise UsageError(f"the flying-pixel threshold must be positive, got {edge_threshold:g}")
    if sky_fraction is not None and not 0 <= sky_fraction < 1:
        raise UsageError(f"the sky fraction must be in [0, 1), got {sky_fraction:g}")
    check_kind(kind)


def _kept_pixels(depth: np.ndarray, edge_threshold: float | None) -> tuple[np.ndarray, str | None]:
    """Flat indices of the pixels with a finite depth that are not flying pixels, and the note on the latter."""
    keep = np.isfinite(depth)
    if edge_threshold is None:
        return np.flatnonzero(keep), None
    flying = edge_mask(depth, edge_threshold)
    keep &= ~flying
    return np.flatnonzero(keep), f"flying {percent(np.count_nonzero(flying), depth.size)}"


def _sample(index: np.ndarray, max_points: int | None, downsample: str, seed: int) -> tuple[np.ndarray, str]:
    """`index` cut by a seeded random sample to the budget of `max_points` under `downsample`, and the note."""
    if max_points is None:
        return index, ""
    budget = max_points if downsample == "random" else VOXEL_CANDIDATES_PER_POINT * max_points
    if index.size <= budget:
        return index, ""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(index, size=budget, replace=False)), f"; {budget:,} sampled at random"


def flip_to_opengl(points: np.ndarray, normal: np.ndarray | None) -> None:
    """OpenCV's camera frame (y down, z forward) to OpenGL's (y up, z toward the viewer), in place."""
    points[:, 1:] *= -1
    if normal is not None:
        normal[:, 1:] *= -1


