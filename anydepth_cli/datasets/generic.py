"""The user's own data: image/depth folders (`lists` reads list files of pairs), PNG depth divided by one `depth_scale`.

Depth files: `.png` (8/16-bit, value / depth_scale metres, 0 = invalid), `.npy` (metres), `.exr` and `.pfm`
(float metres, single channel or the red one). Masks: any image or `.npy`, nonzero = valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anydepth_cli.datasets.files import decode_exr, decode_npy, decode_pfm, decode_png_depth, read_bytes
from anydepth_cli.errors import InputError, UsageError

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_SUFFIXES: tuple[str, ...] = (".png", ".npy", ".exr", ".pfm")
MASK_SUFFIXES: tuple[str, ...] = (".png", ".npy")


def read_depth(path: str | Path, depth_scale: float = 1000.0) -> np.ndarray:
    """Ground-truth depth in metres (float32, H×W); invalid pixels (0, negative, non-finite) are 0.

    `.png`: single-channel 8/16-bit, depth = value / `depth_scale`, 0 = invalid. `.npy`: a 2-D
    array in metres. `.exr` (via OpenCV) and `.pfm`: float depth in metres, single channel or
    the red channel. UsageError for a `depth_scale` that is not positive.
    """
    if not depth_scale > 0:
        raise UsageError(f"depth scale must be positive, got {depth_scale}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DEPTH_SUFFIXES:
        raise InputError(f"unsupported depth format {path.suffix!r} for {path}; use {', '.join(DEPTH_SUFFIXES)}")
    data, name = read_bytes(path), str(path)
    if suffix == ".png":
        depth = decode_png_depth(data, name).astype(np.float64) / depth_scale
    elif suffix == ".npy":
        depth = decode_npy(data, name)
        if depth.dtype.kind == "b":
            raise InputError(f"depth array {path} must be real numbers, got {depth.dtype}")
    else:
        depth = (decode_exr if suffix == ".exr" else decode_pfm)(data, name)
    depth = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))


@dataclass(frozen=True)
class Pair:
    """One sample: an RGB image, its ground-truth depth and an optional validity mask."""

    image: Path
    depth: Path
    mask: Path | None = None


def _index(directory: Path, suffixes: tuple[str, ...]) -> dict[str, list[Path]]:
    """Files in `directory` with one of `suffixes` (case-insensitive), grouped by stem."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and entry.suffix.lower() in suffixes:
            found.setdefault(entry.stem, []).append(entry)
    return found


def _strip_tag(index: dict[str, list[Path]], tag: str) -> dict[str, list[Path]]:
    """The entries of `index` whose stem ends with `tag`, keyed by the stem without it."""
    return {stem[: -len(tag)]: files for stem, files in index.items() if stem.endswith(tag)}


def _one(index: dict[str, list[Path]], stem: str, what: str) -> Path | None:
    matches = index.get(stem, [])
    if len(matches) > 1:
        raise UsageError(f"several {what} files for {stem!r}: {', '.join(p.name for p in matches)}")
    return matches[0] if matches else None


def discover_pairs(folder: str | Path) -> list[Pair]:
    """Image/depth(/mask) pairs in `folder`, sorted by image name; images without depth are skipped.

    Two layouts are recognised:

    * subfolders: `image/NAME.jpg|png|…`, `depth/NAME.png|npy|exr|pfm`, optional `mask/NAME.png|npy`;
    * side by side: `NAME.jpg|png|…` with `NAME_depth.png|npy|exr|pfm` and optional `NAME_mask.png|npy`.

    The subfolder layout is used when both `image/` and `depth/` exist. UsageError when no pair is found
    or a name has several depth (or mask) files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    if (folder / "image").is_dir() and (folder / "depth").is_dir():
        images = _index(folder / "image", IMAGE_SUFFIXES)
        depths = _index(folder / "depth", DEPTH_SUFFIXES)
        masks = _index(folder / "mask", MASK_SUFFIXES) if (folder / "mask").is_dir() else {}
    else:
        images = {s: v for s, v in _index(folder, IMAGE_SUFFIXES).items() if not s.endswith(("_depth", "_mask"))}
        depths = _strip_tag(_index(folder, DEPTH_SUFFIXES), "_depth")
        masks = _strip_tag(_index(folder, MASK_SUFFIXES), "_mask")
    pairs: list[Pair] = []
    for stem, files in images.items():
        depth = _one(depths, stem, "depth")
        if depth is not None:
            mask = _one(masks, stem, "mask")
            pairs.extend(Pair(image, depth, mask) for image in files)
    if not pairs:
        raise UsageError(
            f"no image/depth pairs in {folder}: expected image/ + depth/ subfolders with matching names, "
            "or NAME.jpg next to NAME_depth.png"
        )
    return sorted(pairs, key=lambda p: p.image.name)
