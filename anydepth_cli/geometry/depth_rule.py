"""How a network's map becomes depth: the rule (scale and shift) the user's options select, and the sky.

A network's map is of one of the kinds of ``models.config.OUTPUT_KINDS``: "depth" (large =
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
from anydepth_cli.models.config import OUTPUT_KINDS, space_of

DEFAULT_NEAR = 1.0
DEFAULT_FAR = 10.0
DEPTH_PERCENTILES = (1.0, 99.0)


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
        check_kind(kind)
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


def check_kind(kind: str) -> None:
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


def scene_depth(values: np.ndarray, kind: str, near: float | None, far: float | None,
                depth_at: tuple[int, int, float] | None, sky_fraction: float | None
                ) -> tuple[np.ndarray, DepthRule, list[str | None]]:
    """Steps 1 and 2 of `pointcloud.build_point_cloud`: the float32 depth of a map of `kind` (NaN for sky and
    invalid pixels), the rule that made it and the note on the sky. `values` is blanked where the sky is."""
    notes = [_drop_sky(values, kind, sky_fraction)] if sky_fraction is not None else []
    rule = DepthRule.fit(values, kind=kind, near=near, far=far, depth_at=depth_at)
    return rule.apply(values), rule, notes


def _drop_sky(v: np.ndarray, kind: str, sky_fraction: float) -> str | None:
    """Blank (NaN) the sky in the map `v` of `kind`, as `pointcloud.build_point_cloud` defines it; the note on
    how much."""
    valid = v[_valid(v)]
    if not valid.size:
        return None
    if space_of(kind) == "depth":
        sky = v * np.float32(sky_fraction) > float(np.percentile(valid, DEPTH_PERCENTILES[0]))
    else:
        sky = v < sky_fraction * float(np.percentile(valid, DEPTH_PERCENTILES[1]))
    del valid
    v[sky] = np.nan
    return f"sky {percent(np.count_nonzero(sky), v.size)}"


def percent(count: int, total: int) -> str:
    return f"{100.0 * count / total:.1f}%"


def parse_depth_at(text: str | None) -> tuple[int, int, float] | None:
    """`X,Y=D` → (x, y, depth)."""
    if text is None:
        return None
    try:
        where, depth = text.split("=")
        x, y = where.split(",")
        return int(x), int(y), float(depth)
    except ValueError:
        raise UsageError(f"--depth-at expects X,Y=DEPTH (e.g. 320,240=2.5), not {text!r}") from None
