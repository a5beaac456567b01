"""The user's own data: image/depth folders or list files of pairs, PNG depth divided by one `depth_scale`.

Depth files: `.png` (8/16-bit, value / depth_scale metres, 0 = invalid), `.npy` (metres), `.exr` and `.pfm`
(float metres, single channel or the red one). Masks: any image or `.npy`, nonzero = valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from anydepth_cli.datasets.archive import Sample
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_exr, decode_npy, decode_pfm, decode_png_depth, read_bytes
from anydepth_cli.errors import InputError, UsageError

NAME = "generic"
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_SUFFIXES: tuple[str, ...] = (".png", ".npy", ".exr", ".pfm")
MASK_SUFFIXES: tuple[str, ...] = (".png", ".npy")


def decode_depth(data: bytes, name: str, image_size: tuple[int, int] | None = None,
                 depth_scale: float = 1000.0) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth depth in metres (float32, H×W, invalid pixels 0) and validity (positive and finite) of a
    depth file named `name`.

    `.png`: single-channel 8/16-bit, depth = value / `depth_scale`, 0 = invalid. `.npy`: a 2-D
    array in metres. `.exr` (via OpenCV) and `.pfm`: float depth in metres, single channel or
    the red channel. UsageError for a `depth_scale` that is not positive.
    """
    if not depth_scale > 0:
        raise UsageError(f"depth scale must be positive, got {depth_scale}")
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in DEPTH_SUFFIXES:
        raise InputError(f"unsupported depth format {PurePosixPath(name).suffix!r} for {name}; use {', '.join(DEPTH_SUFFIXES)}")
    if suffix == ".png":
        depth = decode_png_depth(data, name).astype(np.float64) / depth_scale
    elif suffix == ".npy":
        depth = decode_npy(data, name)
        if depth.dtype.kind == "b":
            raise InputError(f"depth array {name} must be real numbers, got {depth.dtype}")
    else:
        depth = (decode_exr if suffix == ".exr" else decode_pfm)(data, name)
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, np.float32(0.0)), valid


def read_depth(path: str | Path, depth_scale: float = 1000.0) -> np.ndarray:
    """Ground-truth depth in metres of a depth file (see `decode_depth`), invalid pixels 0."""
    if not depth_scale > 0:
        raise UsageError(f"depth scale must be positive, got {depth_scale}")
    path = Path(path)
    if path.suffix.lower() not in DEPTH_SUFFIXES:
        raise InputError(f"unsupported depth format {path.suffix!r} for {path}; use {', '.join(DEPTH_SUFFIXES)}")
    return decode_depth(read_bytes(path), str(path), depth_scale=depth_scale)[0]


def _index(names: list[str], folder: str, suffixes: tuple[str, ...]) -> dict[str, list[str]]:
    """The names directly in `folder` ('' for the top) with one of `suffixes` (case-insensitive), by stem."""
    found: dict[str, list[str]] = {}
    for name in names:
        path = PurePosixPath(name)
        if str(path.parent) == (folder or ".") and path.suffix.lower() in suffixes:
            found.setdefault(path.stem, []).append(name)
    return found


def _strip_tag(index: dict[str, list[str]], tag: str) -> dict[str, list[str]]:
    """The entries of `index` whose stem ends with `tag`, keyed by the stem without it."""
    return {stem[: -len(tag)]: files for stem, files in index.items() if stem.endswith(tag)}


def _one(index: dict[str, list[str]], stem: str, what: str) -> str | None:
    matches = index.get(stem, [])
    if len(matches) > 1:
        raise UsageError(f"several {what} files for {stem!r}: {', '.join(PurePosixPath(p).name for p in matches)}")
    return matches[0] if matches else None


@dataclass(frozen=True)
class PairNaming:
    """The two layouts of the user's folders.

    * subfolders: `image/NAME.jpg|png|…`, `depth/NAME.png|npy|exr|pfm`, optional `mask/NAME.png|npy`;
    * side by side: `NAME.jpg|png|…` with `NAME_depth.png|npy|exr|pfm` and optional `NAME_mask.png|npy`.

    The subfolder layout is used when both `image/` and `depth/` exist; images without depth are skipped.
    UsageError when a name has several depth (or mask) files.
    """

    def samples(self, names: list[str]) -> list[Sample]:
        folders = {PurePosixPath(name).parts[0] for name in names if "/" in name}
        if {"image", "depth"} <= folders:
            images = _index(names, "image", IMAGE_SUFFIXES)
            depths = _index(names, "depth", DEPTH_SUFFIXES)
            masks = _index(names, "mask", MASK_SUFFIXES)
        else:
            images = {s: v for s, v in _index(names, "", IMAGE_SUFFIXES).items() if not s.endswith(("_depth", "_mask"))}
            depths = _strip_tag(_index(names, "", DEPTH_SUFFIXES), "_depth")
            masks = _strip_tag(_index(names, "", MASK_SUFFIXES), "_mask")
        samples: list[Sample] = []
        for stem, files in images.items():
            depth = _one(depths, stem, "depth")
            if depth is not None:
                mask = _one(masks, stem, "mask")
                samples.extend(Sample(image, depth, mask) for image in files)
        return samples


def family(depth_scale: float = 1000.0) -> Family:
    """The user's data, PNG depth divided by `depth_scale`."""
    return Family(NAME, "image/depth", naming=(PairNaming(),), decode=partial(decode_depth, depth_scale=depth_scale),
                  layout="image/ + depth/ subfolders with matching names, or NAME.jpg next to NAME_depth.png",
                  noun="pairs")
