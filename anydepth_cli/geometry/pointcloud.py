"""From a network's affine-invariant depth or disparity map to a coloured 3-D point cloud.

Conventions used throughout this module:

* Pixels and the camera frame are those of ``geometry.camera``.
* Output frame of ``build_point_cloud`` is selectable; its default, "opengl" (x right,
  y up, z toward the viewer; the camera looks down -z), opens upright and facing the
  viewer in MeshLab, Blender, CloudCompare and Open3D.
* A network's map is of one of the kinds of ``models.config.OUTPUT_KINDS``: "depth" (large =
  far) or "disparity" (large = near, 0 meaning infinitely far), both affine-invariant (scale
  and shift unknown), or "metric" (depth in metres). Only positive, finite values are valid.
  Depth comes out in metres for metric maps, else in the units the user gives
  ``near``/``far`` or ``depth_at`` in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anydepth_cli.errors import UsageError
from anydepth_cli.geometry.camera import Intrinsics, unproject_pixels
from anydepth_cli.models.config import OUTPUT_KINDS, space_of

DEFAULT_NEAR = 1.0
DEFAULT_FAR = 10.0
DEPTH_PERCENTILES = (1.0, 99.0)
VOXEL_CANDIDATES_PER_POINT = 4


@dataclass(frozen=True)
class DepthRule:
    """How a map of ``kind`` becomes depth: the model's value v gives
    ``depth = scale * v + shift`` for "depth" and ``1 / depth = scale * v + shift`` for
    "disparity".

    ``description`` is one line saying which user choice fixed ``scale`` and ``shift``.
    """

    kind: str
    scale: float
    shift: float
    description: str

    @classmethod
    def fit(
        cls,
        values: np.ndarray,
        *,
        kind: str,
        near: float | None = None,
        far: float | None = None,
        depth_at: tuple[int, int, float] | None = None,
    ) -> DepthRule:
        """The rule the user's options select for this map of ``kind`` ("depth" or "disparity").

        * ``depth_at=(x, y, D)`` (column, row, depth): a single-scale rule that assumes zero
          shift and puts pixel (x, y) at depth D: ``depth = D * v / v[y, x]`` for depth,
          ``depth = D * v[y, x] / v`` for disparity.
        * Otherwise ``near``/``far`` (defaults 1 and 10; if only one is given the other is
          set at a 10:1 ratio) put the bulk of the scene at near…far; pixels beyond the
          percentiles fall outside. For depth, depth is the affine function of v that sends
          the 1st percentile of the valid values to ``near`` and the 99th to ``far``; a
          constant map goes halfway between them. For disparity, inverse depth is the
          affine function of v that sends the 99th percentile to 1 / near and the 1st to
          1 / far; a constant map goes to the depth whose inverse is halfway between.

        Invalid (NaN, inf, non-positive) values are ignored. Raises ValueError for an
        unknown ``kind``, and UsageError for ``depth_at`` combined with ``near``/``far``,
        non-positive depths, ``far <= near``, or a ``depth_at`` pixel outside the image or
        without a valid value.
        """
        _check_kind(kind)
        if kind == "metric":
            if near is not None or far is not None or depth_at is not None:
                raise UsageError("the model answers in metres: its cloud needs no --near, --far or --depth-at")
            return cls("depth", 1.0, 0.0, "depth in metres as the metric model gives it")
        if depth_at is not None:
            if near is not None or far is not None:
                raise UsageError("--depth-at cannot be combined with --near/--far")
            return cls._fit_depth_at(values, kind, depth_at)
        near, far = _near_far(near, far)
        v = np.asarray(values)
        valid = v[_valid(v)]
        lo_pct, hi_pct = DEPTH_PERCENTILES
        description = f"depth {near:g}–{far:g} from {kind} percentiles {lo_pct:g}–{hi_pct:g}"
        if valid.size == 0:
            return cls(kind, 1.0, 0.0, f"{description} (no valid {kind})")
        v_lo, v_hi = (float(p) for p in np.percentile(valid, [lo_pct, hi_pct]))
        # What the rule's left-hand side must be at the low and the high percentile.
        t_lo, t_hi = (near, far) if kind == "depth" else (1.0 / far, 1.0 / near)
        if v_hi <= v_lo:
            return cls(kind, 0.0, (t_lo + t_hi) / 2.0, f"{description} (constant {kind})")
        scale = (t_hi - t_lo) / (v_hi - v_lo)
        return cls(kind, scale, t_lo - scale * v_lo, description)

    @classmethod
    def _fit_depth_at(cls, values: np.ndarray, kind: str, depth_at: tuple[int, int, float]) -> DepthRule:
        x, y, depth = int(depth_at[0]), int(depth_at[1]), float(depth_at[2])
        height, width = np.shape(values)
        if not (math.isfinite(depth) and depth > 0):
            raise UsageError(f"--depth-at needs a positive depth, got {depth:g}")
        if not (0 <= x < width and 0 <= y < height):
            raise UsageError(f"--depth-at pixel ({x}, {y}) is outside the {width}×{height} image")
        ref = float(values[y, x])
        if not (math.isfinite(ref) and ref > 0):
            raise UsageError(f"--depth-at pixel ({x}, {y}) has no valid {kind}; pick another")
        if kind == "depth":
            scale, proportional = depth / ref, "predicted depth"
        else:
            scale, proportional = 1.0 / (depth * ref), "1/disparity"
        description = f"depth {depth:g} at pixel ({x}, {y}), depth ∝ {proportional} (shift assumed 0)"
        return cls(kind, scale, 0.0, description)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """float32 depth; NaN where the value or the depth is not positive/finite."""
        v = np.asarray(values)
        out = np.multiply(v, np.float32(self.scale), dtype=np.float32)
        out += np.float32(self.shift)  # depth, or inverse depth for disparity
        bad = ~(np.isfinite(out) & (out > 0))
        bad |= ~(v > 0)  # also NaN
        if self.kind == "disparity":
            with np.errstate(divide="ignore"):
                np.reciprocal(out, out=out)
        out[bad] = np.nan
        return out


def _check_kind(kind: str) -> None:
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")


def _valid(values: np.ndarray) -> np.ndarray:
    """Where a depth or disparity value is usable: finite and positive."""
    return np.isfinite(values) & (values > 0)


def _near_far(near: float | None, far: float | None) -> tuple[float, float]:
    ratio = DEFAULT_FAR / DEFAULT_NEAR
    if near is None and far is None:
        near, far = DEFAULT_NEAR, DEFAULT_FAR
    elif far is None:
        far = near * ratio
    elif near is None:
        near = far / ratio
    if not (math.isfinite(near) and near > 0):
        raise UsageError(f"--near must be a positive depth, got {near:g}")
    if not (math.isfinite(far) and far > near):
        raise UsageError(f"--far must be finite and greater than --near ({near:g}), got {far:g}")
    return float(near), float(far)


def to_metric_depth(
    values: np.ndarray,
    *,
    kind: str,
    near: float | None = None,
    far: float | None = None,
    depth_at: tuple[int, int, float] | None = None,
) -> tuple[np.ndarray, str]:
    """float32 depth map (NaN where invalid) of a map of ``kind`` ("depth" or "disparity")
    and a one-line description of the rule used.

    See ``DepthRule.fit`` for the rules ``near``/``far`` and ``depth_at`` select.
    """
    rule = DepthRule.fit(values, kind=kind, near=near, far=far, depth_at=depth_at)
    return rule.apply(values), rule.description


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
    normal = _normals(depth, intrinsics, rows, cols, points) if normals else None
    del rows, cols, index
    if downsample == "voxel" and max_points is not None and len(points) > max_points:
        size = _voxel_size(points, max_points)
        points, colors, normal = _voxel_average(points, colors, normal, size)
        sampling += f"; averaged in voxels of {size:.3g}"
    if frame == "opengl":
        flip_to_opengl(points, normal)
    dropped = f" ({', '.join(note for note in notes if note)} dropped)" if any(notes) else ""
    description = (
        f"{len(points):,} points from {pixels:,} pixels{dropped}{sampling}; {rule.description}; "
        f"fx {intrinsics.fx:.1f} px from {intrinsics.source}"
    )
    return PointCloud(points=points, colors=colors, normals=normal, description=description)


def scene_depth(values: np.ndarray, kind: str, near: float | None, far: float | None,
                depth_at: tuple[int, int, float] | None, sky_fraction: float | None
                ) -> tuple[np.ndarray, DepthRule, list[str | None]]:
    """Steps 1 and 2 of `build_point_cloud`: the float32 depth of a map of `kind` (NaN for sky and invalid
    pixels), the rule that made it and the note on the sky. `values` is blanked where the sky is."""
    notes = [_drop_sky(values, kind, sky_fraction)] if sky_fraction is not None else []
    rule = DepthRule.fit(values, kind=kind, near=near, far=far, depth_at=depth_at)
    return rule.apply(values), rule, notes


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
    _check_kind(kind)


def _drop_sky(v: np.ndarray, kind: str, sky_fraction: float) -> str | None:
    """Blank (NaN) the sky in the map `v` of `kind`, as `build_point_cloud` defines it; the note on how much."""
    valid = v[_valid(v)]
    if not valid.size:
        return None
    if space_of(kind) == "depth":
        sky = v * np.float32(sky_fraction) > float(np.percentile(valid, DEPTH_PERCENTILES[0]))
    else:
        sky = v < sky_fraction * float(np.percentile(valid, DEPTH_PERCENTILES[1]))
    del valid
    v[sky] = np.nan
    return f"sky {_percent(np.count_nonzero(sky), v.size)}"


def _kept_pixels(depth: np.ndarray, edge_threshold: float | None) -> tuple[np.ndarray, str | None]:
    """Flat indices of the pixels with a finite depth that are not flying pixels, and the note on the latter."""
    keep = np.isfinite(depth)
    if edge_threshold is None:
        return np.flatnonzero(keep), None
    flying = edge_mask(depth, edge_threshold)
    keep &= ~flying
    return np.flatnonzero(keep), f"flying {_percent(np.count_nonzero(flying), depth.size)}"


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


def _percent(count: int, total: int) -> str:
    return f"{100.0 * count / total:.1f}%"


def _normals(
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


def _voxel_size(points: np.ndarray, target: int) -> float:
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


def _voxel_average(
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
