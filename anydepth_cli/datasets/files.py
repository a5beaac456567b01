"""File decoders for ground truth and photos, from bytes (a file on disk or a member of an archive).

Depth decoders return the stored values as float32 (H×W) without interpreting them: units, invalid codes and
masks are each dataset family's business.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from anydepth_cli.errors import InputError


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file; InputError when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def decode_image(data: bytes, name: str) -> np.ndarray:
    """An image file's pixels as stored (bit depth and channels kept, BGR order for colour); InputError if it
    cannot be decoded. `name` is only used in messages."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise InputError(f"cannot decode {name} as an image")
    return image


def decode_png_depth(data: bytes, name: str) -> np.ndarray:
    """The raw values of a single-channel 8- or 16-bit depth PNG, as float32."""
    raw = decode_image(data, name)
    if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
        raise InputError(f"depth PNG {name} must be single-channel 8- or 16-bit")
    return raw.astype(np.float32)


def decode_png_metres(data: bytes, name: str, per_metre: float) -> tuple[np.ndarray, np.ndarray]:
    """A depth PNG storing metres × `per_metre` (1000: millimetres): depth in metres (float32) and where it
    was measured (nonzero values)."""
    metres = (decode_png_depth(data, name).astype(np.float64) / per_metre).astype(np.float32)
    return metres, metres > 0


def decode_npy(data: bytes, name: str) -> np.ndarray:
    """A `.npy` array with its length-1 axes dropped; InputError unless it is 2-D and real."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {name}: {exc}") from None
    array = np.squeeze(array)
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise InputError(f"array {name} must be 2-D real numbers, got {array.dtype} {array.shape}")
    return array


def decode_pfm(data: bytes, name: str) -> np.ndarray:
    """A PFM image ("Pf" grey, or the first channel of "PF" colour), rows top to bottom, as float32.

    Format: a `Pf`/`PF` line, a `width height` line and a scale line whose sign gives the byte order
    (negative: little-endian), then float32 rows from the bottom of the image to the top.
    """
    stream = io.BytesIO(data)
    kind = stream.readline().strip()
    if kind not in (b"Pf", b"PF"):
        raise InputError(f"{name} is not a PFM file")
    try:
        width, height = (int(v) for v in stream.readline().split())
        scale = float(stream.readline().strip())
    except ValueError as exc:
        raise InputError(f"cannot read PFM {name}: {exc}") from None
    channels = 3 if kind == b"PF" else 1
    count = width * height * channels
    body = data[stream.tell():]
    if len(body) < 4 * count:
        raise InputError(f"PFM {name} is truncated")
    values = np.frombuffer(body, dtype="<f4" if scale < 0 else ">f4", count=count)
    return values.reshape(height, width, channels)[::-1, :, 0].astype(np.float32)


def decode_exr(data: bytes, name: str) -> np.ndarray:
    """The depth channel of an EXR as float32: R, else the only channel, else Y (read with the OpenEXR package)."""
    import OpenEXR

    try:
        channels = OpenEXR.File(io.BytesIO(data), separate_channels=True).channels()
    except Exception as exc:  # the bindings raise RuntimeError, and others for malformed headers
        raise InputError(f"cannot read EXR depth {name}: {exc}") from None
    names = list(channels)
    key = "R" if "R" in names else names[0] if len(names) == 1 else "Y"
    if key not in names:
        raise InputError(f"EXR {name} has channels {', '.join(names)}: expected R, Y or a single one")
    return np.asarray(channels[key].pixels, dtype=np.float32)


def decode_rgb(data: bytes, name: str) -> np.ndarray:
    """A photo as RGB uint8 H×W×3, its pixel grid as stored (no EXIF rotation, so it lines up with its ground
    truth)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {name}: {exc}") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 H×W×3 (see `decode_rgb`)."""
    return decode_rgb(read_bytes(path), str(path))


def decode_mask(data: bytes, name: str) -> np.ndarray:
    """A validity mask (bool H×W) from an image or `.npy` file: nonzero (in any channel) is valid."""
    mask = decode_npy(data, name) if name.lower().endswith(".npy") else decode_image(data, name)
    if mask.ndim == 3:
        return np.any(mask != 0, axis=2)
    if mask.ndim != 2:
        raise InputError(f"mask {name} must be 2-D, got shape {mask.shape}")
    return mask != 0


def read_mask(path: str | Path) -> np.ndarray:
    """A validity mask file (see `decode_mask`)."""
    return decode_mask(read_bytes(path), str(path))
