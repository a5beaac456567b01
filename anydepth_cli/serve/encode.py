"""Response bodies for one predicted map: the very bytes `anydepth predict` writes for it, made by its writers."""

from __future__ import annotations

import io
import json
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from anydepth_cli.io.writers import write_color_png, write_exr, write_npy, write_png16
from anydepth_cli.pipelines.geometry import CameraOptions, PointCloudOptions, photo_record, write_cloud
from anydepth_cli.pipelines.photos import depth_picture

MAP_FORMATS = ("npy", "png16", "exr", "color", "json")
MEDIA_TYPES = {"npy": "application/octet-stream", "png16": "image/png", "exr": "image/x-exr",
               "color": "image/png", "json": "application/json", "ply": "application/octet-stream"}


@dataclass(frozen=True)
class Body:
    """An encoded response: its bytes, media type and the headers that describe the map."""

    content: bytes
    media_type: str
    headers: dict[str, str]


class Scratch:
    """A private folder where the file writers write a body before it is read back (and the file removed)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="anydepth-serve-"))

    def bytes_of(self, suffix: str, write: Callable[[Path], object]) -> bytes:
        """What `write(path)` writes to a fresh path ending in `suffix`."""
        path = self.folder / f"{secrets.token_hex(8)}{suffix}"
        try:
            write(path)
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def map_headers(values: np.ndarray, kind: str, model: str) -> dict[str, str]:
    """`X-Depth-Kind`, `X-Depth-Min`, `X-Depth-Max` (over the finite values) and `X-Model`."""
    low, high = value_range(values)
    return {"X-Depth-Kind": kind, "X-Depth-Min": repr(low), "X-Depth-Max": repr(high), "X-Model": model}


def value_range(values: np.ndarray) -> tuple[float, float]:
    """The finite minimum and maximum of a map (0, 0 when none is finite)."""
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def encode_map(values: np.ndarray, kind: str, fmt: str, model: str, scratch: Scratch, cmap: str,
               invert: bool = False) -> Body:
    """One map of `kind` in `fmt` (one of MAP_FORMATS)."""
    headers = map_headers(values, kind, model)
    if fmt == "json":
        low, high = value_range(values)
        summary = {"kind": kind, "min": low, "max": high, "width": values.shape[1], "height": values.shape[0],
                   "model": model}
        return Body(json.dumps(summary).encode(), MEDIA_TYPES[fmt], headers)
    writers: dict[str, tuple[str, Callable[[Path], None]]] = {
        "npy": (".npy", lambda path: write_npy(path, values)),
        "png16": (".png", lambda path: write_png16(path, values, kind)),
        "exr": (".exr", lambda path: write_exr(path, values, kind)),
        "color": (".png", lambda path: write_color_png(path, depth_picture(values, kind, cmap, invert))),
    }
    suffix, write = writers[fmt]
    return Body(scratch.bytes_of(suffix, write), MEDIA_TYPES[fmt], headers)


def encode_point_cloud(image: np.ndarray, values: np.ndarray, kind: str, settings: PointCloudOptions,
                       camera_options: CameraOptions, photo: bytes, scratch: Scratch) -> Body:
    """The binary PLY point cloud `predict --pointcloud` writes for this image (its file's bytes `photo`) and map."""
    camera, record = photo_record(io.BytesIO(photo), values.shape, kind, camera_options)
    content = scratch.bytes_of(".ply", lambda path: write_cloud(path, image, values, kind, settings, camera, record,
                                                                camera_options.axes))
    return Body(content, MEDIA_TYPES["ply"], map_headers(values, kind, camera_options.model))
