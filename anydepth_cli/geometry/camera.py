"""Pinhole cameras: intrinsics from a focal length, a field of view or EXIF, and unprojection of depth maps.

Pixels: column ``u`` (x, to the right) and row ``v`` (y, downwards); integer coordinates are
pixel *centres*, so an image ``width`` pixels wide spans ``[-0.5, width - 0.5]`` and its
centre is ``((width - 1) / 2, (height - 1) / 2)``. Camera frame ("opencv"): x right, y down,
z forward (into the scene), the camera at the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from anydepth_cli.errors import UsageError


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (pixel-centre convention) and how they were chosen."""

    fx: float
    fy: float
    cx: float
    cy: float
    source: str


def intrinsics_for(
    width: int,
    height: int,
    fov: float | None = None,
    focal: float | None = None,
    exif_focal_35mm: float | None = None,
    principal: tuple[float, float] | None = None,
    default_fov: float = 60.0,
) -> Intrinsics:
    """Intrinsics for a ``width`` × ``height`` image with square pixels.

    The focal length comes from, in order of priority: ``focal`` (pixels), ``fov`` (the
    horizontal field of view in degrees, across the full image width: fx = width / 2 /
    tan(fov / 2)), ``exif_focal_35mm`` (the 35 mm-equivalent focal length in mm, taken
    against a 36 mm wide sensor: fx = f35 / 36 * width; a missing or non-positive value is
    ignored), and finally ``default_fov``. The principal point is the image centre
    ``((width - 1) / 2, (height - 1) / 2)`` unless ``principal`` (cx, cy) is given.
    Raises UsageError for a ``fov`` outside (0, 180), a non-positive ``focal`` or a
    non-finite principal point.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    if focal is not None:
        if not (math.isfinite(focal) and focal > 0):
            raise UsageError(f"--focal must be a positive number of pixels, got {focal:g}")
        f, source = float(focal), f"--focal {focal:g}"
    elif fov is not None:
        f, source = _focal_from_fov(width, fov, "--fov"), f"--fov {fov:g}"
    elif exif_focal_35mm is not None and math.isfinite(exif_focal_35mm) and exif_focal_35mm > 0:
        f = exif_focal_35mm / 36.0 * width
        source = f"EXIF {exif_focal_35mm:g} mm (35 mm equiv.)"
    else:
        f = _focal_from_fov(width, default_fov, "the default field of view")
        source = f"default {default_fov:g}° horizontal FOV"
    if principal is None:
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    else:
        cx, cy = (float(c) for c in principal)
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise UsageError(f"the principal point must be finite, got ({cx:g}, {cy:g})")
    return Intrinsics(fx=f, fy=f, cx=cx, cy=cy, source=source)


def _focal_from_fov(width: int, fov: float, what: str) -> float:
    if not (math.isfinite(fov) and 0 < fov < 180):
        raise UsageError(f"{what} must be between 0 and 180 degrees (exclusive), got {fov:g}")
    return width / 2.0 / math.tan(math.radians(fov) / 2.0)


def exif_focal_35mm(path: Path) -> float | None:
    """The image's EXIF FocalLengthIn35mmFilm in mm, or None if absent, zero or unreadable."""
    tag = ExifTags.Base.FocalLengthIn35mmFilm
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            value = exif.get_ifd(ExifTags.IFD.Exif).get(tag, exif.get(tag))
        focal = float(value) if value is not None else None
    except (OSError, ValueError, TypeError, SyntaxError, ZeroDivisionError, Image.DecompressionBombError):
        return None
    return focal if focal is not None and math.isfinite(focal) and focal > 0 else None


def unproject(depth: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """H×W×3 float32 camera-frame points (x right, y down, z forward) of an H×W depth map.

    Pinhole model with pixel centres at integer (u, v): x = (u - cx) * z / fx,
    y = (v - cy) * z / fy, z = depth. NaN depth gives NaN points.
    """
    z = np.asarray(depth, dtype=np.float32)
    height, width = z.shape
    xyz = np.empty((height, width, 3), dtype=np.float32)
    u = ((np.arange(width, dtype=np.float64) - intrinsics.cx) / intrinsics.fx).astype(np.float32)
    v = ((np.arange(height, dtype=np.float64) - intrinsics.cy) / intrinsics.fy).astype(np.float32)
    np.multiply(z, u[None, :], out=xyz[..., 0])
    np.multiply(z, v[:, None], out=xyz[..., 1])
    xyz[..., 2] = z
    return xyz


def unproject_pixels(
    rows: np.ndarray, cols: np.ndarray, z: np.ndarray, intrinsics: Intrinsics
) -> np.ndarray:
    """N×3 float32 camera-frame points of the pixels (rows, cols) at depths z."""
    xyz = np.empty((z.shape[0], 3), dtype=np.float32)
    for out, pixel, centre, focal in (
        (xyz[:, 0], cols, intrinsics.cx, intrinsics.fx),
        (xyz[:, 1], rows, intrinsics.cy, intrinsics.fy),
    ):
        out[:] = pixel  # exact in float32 for any realistic image size
        out -= np.float32(centre)
        out *= z
        out /= np.float32(focal)
    xyz[:, 2] = z
    return xyz
