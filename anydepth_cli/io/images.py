"""Finding input photos and decoding them to RGB arrays."""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from itertools import chain, count
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from anydepth_cli.errors import InputError, UsageError

_COMMON_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".tif", ".tiff",
    ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".jpx",
    ".jpf", ".avif", ".qoi", ".mpo",
}  # fmt: skip

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    _COMMON_EXTENSIONS & set(Image.registered_extensions())
)
"""Lower-case suffixes of the photo formats this Pillow build can decode."""

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

# read_image checks the pixel count against its own limit before decoding, so Pillow's
# warning for large images would only repeat (or pre-empt) that check.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(InputError):
    """An image over the pixel limit, refused before it is decoded."""


@dataclass
class InputItem:
    """One photo to process and the relative path its outputs mirror under the output folder."""

    path: Path
    relative: Path


@dataclass
class Discovery:
    """The inputs found for the command-line paths, and the other files skipped in folders."""

    items: list[InputItem]
    skipped: list[Path]


def discover_inputs(paths: Sequence[Path], also: frozenset[str] = frozenset()) -> Discovery:
    """Expand files and folders (recursively, sorted, hidden entries ignored) into input items.

    A file given directly is taken whatever its suffix; in folders only files with an
    `IMAGE_EXTENSIONS` suffix, or one in `also` (lower case, e.g. video suffixes), are taken and
    the rest are listed as skipped. When several
    folders are given, each folder's items are placed under the folder's name. Outputs whose
    relative paths would clash (same path without suffix, compared case-insensitively) get a
    suffix tag or a number; the same file given twice is taken once.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or folder: {path}")
    prefix_folders = sum(path.is_dir() for path in paths) > 1

    items: list[InputItem] = []
    skipped: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            images, others = _walk(path, IMAGE_EXTENSIONS | also)
            skipped.extend(others)
            prefix = Path(path.resolve().name or "root") if prefix_folders else Path()
            candidates = [InputItem(f, prefix / f.relative_to(path)) for f in images]
        else:
            candidates = [InputItem(path, Path(path.name))]
        for item in candidates:
            resolved = _identity(item.path)
            if resolved not in seen:
                seen.add(resolved)
                items.append(item)

    if not items:
        folders = ", ".join(str(p) for p in paths)
        kinds = "images or videos" if also else "images"
        raise UsageError(
            f"no {kinds} in {folders} ({len(skipped)} other file(s) skipped; "
            f"suffixes taken: {', '.join(sorted(IMAGE_EXTENSIONS | also))})"
        )
    return Discovery(items=_disambiguate(items), skipped=skipped)


def _identity(path: Path) -> Path:
    """The resolved path, or the absolute path for a symlink loop, so each file is taken once."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def _walk(folder: Path, suffixes: frozenset[str]) -> tuple[list[Path], list[Path]]:
    """Files under `folder` with one of `suffixes` and the other files, skipping hidden names, sorted by path."""

    def fail(exc: OSError) -> None:
        raise UsageError(f"cannot read folder {exc.filename}: {exc.strerror}")

    images: list[Path] = []
    others: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            file = Path(dirpath, name)
            (images if file.suffix.lower() in suffixes else others).append(file)

    def order(file: Path) -> tuple[str, ...]:
        return file.relative_to(folder).parts

    return sorted(images, key=order), sorted(others, key=order)


def _disambiguate(items: list[InputItem]) -> list[InputItem]:
    """Rename later items whose relative path (without suffix) clashes with an earlier one."""
    used: set[str] = set()
    result: list[InputItem] = []
    for item in items:
        relative = item.relative
        if _clash_key(relative) in used:
            stem, suffix = relative.stem, relative.suffix
            tag = suffix.lstrip(".").lower()
            names = chain(
                [f"{stem}-{tag}{suffix}"] if tag else [],
                (f"{stem}-{n}{suffix}" for n in count(2)),
            )
            relative = next(
                candidate
                for candidate in (relative.with_name(name) for name in names)
                if _clash_key(candidate) not in used
            )
        used.add(_clash_key(relative))
        result.append(InputItem(item.path, relative))
    return result


def _clash_key(relative: Path) -> str:
    return relative.with_suffix("").as_posix().casefold()


def read_image(path: Path, max_pixels: int | None) -> np.ndarray:
    """Decode an image file to a C-contiguous RGB uint8 H×W×3 array, upright per its EXIF.

    Grey, 1-bit, palette, CMYK and other modes are converted to RGB; 16-bit grey is scaled
    to the full 8-bit range; transparent pixels are composited over black. `max_pixels`
    (None: no limit of ours, Pillow's own safety limit still applies) is checked against the
    header before decoding. Raises InputError whose message is a one-line reason (without
    the path) for empty, unreadable, corrupt, truncated, non-image and too-large files.
    """
    try:
        # Non-blocking, so that opening a FIFO does not wait for a writer; only regular files are read.
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        handle = os.fdopen(os.open(path, flags), "rb")
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from exc
    with handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise InputError("not a regular file")
        if status.st_size == 0:
            raise InputError("empty file")
        return _decode(handle, max_pixels)


def decode_image(data: bytes, max_pixels: int | None) -> np.ndarray:
    """`read_image` for an image held in memory (an upload): the same array, checks and errors."""
    if not data:
        raise InputError("empty file")
    return _decode(io.BytesIO(data), max_pixels)


def _decode(handle: BinaryIO, max_pixels: int | None) -> np.ndarray:
    with _open_checked(handle, max_pixels) as image:
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(_bomb_message(exc, max_pixels)) from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
            raise InputError(f"corrupt or truncated image data ({_one_line(exc)})") from exc
        try:
            return pil_to_rgb(image)
        except ValueError as exc:
            raise InputError(f"unsupported colour mode {image.mode}") from exc


def _open_checked(handle: BinaryIO, max_pixels: int | None) -> Image.Image:
    """Open (parse the header of) an image and enforce the pixel limit before any decoding."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if max_pixels is not None and pillow_limit is not None and pillow_limit < max_pixels:
        # The user allowed more pixels than Pillow's default; it only ever goes up.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        image = Image.open(handle)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(_bomb_message(exc, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise InputError("not an image file") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"corrupt image header ({_one_line(exc)})") from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        pixels = width * height
        raise ImageTooLarge(_too_large_message(f"{width}x{height} = {pixels}", pixels, max_pixels))
    return image


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode as a C-contiguous RGB uint8 H×W×3 array (the conversions of `read_image`)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit grey (32-bit "I" is read as 16-bit data): round to 8 bits over the full range.
        values = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[..., 3:].astype(np.uint16)
        return ((rgba[..., :3] * alpha + 127) // 255).astype(np.uint8)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8, order="C")


def _bomb_message(exc: Image.DecompressionBombError, max_pixels: int | None) -> str:
    """The too-large message for an image Pillow refused, stated against our limit when there is one.

    Pillow refuses images of more than twice its MAX_IMAGE_PIXELS, which `_open_checked` never
    sets below `max_pixels`, so such an image is always over `max_pixels` too.
    """
    match = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
    if match is None:
        return "image is too large; pass --max-pixels N to allow it"
    pixels, pillow_limit = int(match[1]), int(match[2])
    return _too_large_message(str(pixels), pixels, max_pixels, pillow_limit)


def _too_large_message(size: str, pixels: int, max_pixels: int | None, pillow_limit: int | None = None) -> str:
    if max_pixels is not None:
        limit = f"more than --max-pixels {max_pixels}"
    else:
        limit = f"over Pillow's limit of {pillow_limit}"
    return f"image is too large ({size} pixels, {limit}); pass --max-pixels {pixels} to allow it"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
