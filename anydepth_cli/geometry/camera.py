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
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image

from anydepth_cli.errors import UsageError


DEFAULT_FOV = 60.0
"""The horizontal field of view assumed when neither the user nor the photo's EXIF gives a focal length."""
EXIF_FOCAL_MAX_MM = 5000.0
"""The longest 35 mm-equivalent focal length believed from EXIF; longer ones (and 0) are ignored."""
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (pixel-centre convention), how they were chosen and, where a value was set
    aside on the way (an absurd EXIF focal length), a note saying so."""

    fx: float
    fy: float
    cx: float
    cy: float
    source: str
    note: str | None = None


def check_camera_options(fov: float | None, focal: float | None) -> None:
    """UsageError for `--focal` that is not a positive number of pixels or `--fov` outside (0, 180)."""
    if focal is not None and not (math.isfinite(focal) and focal > 0):
        raise UsageError(f"--focal must be a positive number of pixels, got {focal:g}")
    if fov is not None:
        _focal_from_fov(1, fov, "--fov")


def intrinsics_for(
    width: int,
    height: int,
    fov: float | None = None,
    focal: float | None = None,
    exif_focal_35mm: float | None = None,
    principal: tuple[float, float] | None = None,
    default_fov: float = DEFAULT_FOV,
) -> Intrinsics:
    """Intrinsics for a ``width`` × ``height`` image with square pixels (upright: EXIF orientation applied).

    The focal length comes from, in order of priority: ``focal`` (pixels), ``fov`` (the
    horizontal field of view in degrees, across the full image width: fx = width / 2 /
    tan(fov / 2)), ``exif_focal_35mm`` (the 35 mm-equivalent focal length in mm, converted on
    the diagonal as Apple's Depth Pro does: fx = f35 · hypot(width, height) / hypot(36, 24);
    a value of 0 or above EXIF_FOCAL_MAX_MM is ignored, with a ``note``), and finally
    ``default_fov``. The principal point is the image centre
    ``((width - 1) / 2, (height - 1) / 2)`` unless ``principal`` (cx, cy) is given.
    Raises UsageError for a ``fov`` outside (0, 180), a non-positive ``focal`` or a
    non-finite principal point.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}×{height}")
    check_camera_options(fov, focal)
    note = None
    usable_exif = exif_focal_35mm is not None and 0 < exif_focal_35mm <= EXIF_FOCAL_MAX_MM
    if focal is not None:
        f, source = float(focal), f"--focal {focal:g}"
    elif fov is not None:
        f, source = _focal_from_fov(width, fov, "--fov"), f"--fov {fov:g}"
    elif usable_exif:
        f = exif_focal_35mm * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
        source = f"EXIF {exif_focal_35mm:g} mm (35 mm equiv., on the diagonal)"
    else:
        f = _focal_from_fov(width, default_fov, "the default field of view")
        source = f"default {default_fov:g}° horizontal FOV"
        if exif_focal_35mm is not None:
            note = (f"EXIF focal length {exif_focal_35mm:g} mm (35 mm equiv.) ignored: not in "
                    f"(0, {EXIF_FOCAL_MAX_MM:g}] mm")
    if principal is None:
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    else:
        cx, cy = (float(c) for c in principal)
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise UsageError(f"the principal point must be finite, got ({cx:g}, {cy:g})")
    return Intrinsics(fx=f, fy=f, cx=cx, cy=cy, source=source, note=note)


def _focal_from_fov(width: int, fov: float, what: str) -> float:
    if not (math.isfinite(fov) and 0 < fov < 180):
        raise UsageError(f"{what} must be between 0 and 180 degrees (exclusive), got {fov:g}")
    return width / 2.0 / math.tan(math.radians(fov) / 2.0)


def exif_focal_35mm(path: Path | BinaryIO) -> float | None:
    """The image's (a file's, or its bytes') EXIF FocalLengthIn35mmFilm in mm as recorded (0 and absurd values too: `intrinsics_for` judges
    them), or None if absent or unreadable."""
    tag = ExifTags.Base.FocalLengthIn35mmFilm
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            value = exif.get_ifd(ExifTags.IFD.Exif).get(tag, exif.get(tag))
        focal = float(value) if value is not None else None
    except (OSError, ValueError, TypeError, SyntaxError, ZeroDivisionError, Image.DecompressionBombError):
        return None
    return focal if focal is not None and math.isfinite(focal) else None


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


def project(points: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """N×2 float64 pixel coordinates (u, v) of N×3 camera-frame points (OpenCV frame): the inverse of
    `unproject_pixels`."""
    xyz = np.asarray(points, dtype=np.float64)
    u = xyz[:, 0] / xyz[:, 2] * intrinsics.fx + intrinsics.cx
    v = xyz[:, 1] / xyz[:, 2] * intrinsics.fy + intrinsics.cy
    return np.stack([u, v], axis=1)


def camera_record(intrinsics: Intrinsics, width: int, height: int, model: str, kind: str) -> dict[str, object]:
    """What every geometry output records about its camera: intrinsics, image size, units, the model, whether the
    depth is metric, and where the focal length came from."""
    metric = kind == "metric"
    return {
        "fx": intrinsics.fx, "fy": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy,
        "width": width, "height": height,
        "units": "metres" if metric else "relative: scene units set by --near/--far or --depth-at",
        "model": model, "metric": metric, "focal_source": intrinsics.source,
        "pixels": "integer coordinates are pixel centres; camera frame x right, y down, z forward (OpenCV)",
    }
