"""Writing depth outputs atomically: colour-mapped PNG, 16-bit PNG, OpenEXR, .npy and side-by-side views.

Every file or folder being written lies under a hidden temp name (`temp_beside`) until it is complete.
A run killed outright (kill -9, power loss) leaves those behind; `claim_output_dir` removes them on the
next run into the folder, unless another run is writing there at the time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
from PIL import Image, PngImagePlugin

from anydepth_cli.errors import InputError, OutputError, UsageError

if TYPE_CHECKING:
    import torch

DEFAULT_CMAP = "inferno"
"""Perceptually uniform; near is bright yellow, far is black (see `near_is_dark`)."""

PNG16_MIN_KEY = "anydepth_min"
PNG16_MAX_KEY = "anydepth_max"
PNG16_KIND_KEY = "anydepth_kind"
EXR_CHANNEL = "Y"
"""The one channel of our EXR files: luminance, so every EXR reader (OpenCV, FFmpeg, compositors) shows a grey
picture; compositors shuffle it into their depth channel."""
EXR_KIND_KEY = "anydepth_kind"

_TEMP_NAME = re.compile(r"\..*\.tmp-[0-9a-f]{8}(\..*)?", re.DOTALL)

_SUGGESTED_CMAPS = ("inferno", "magma", "viridis", "plasma", "turbo", "gray", "Spectral_r")
_PNG_COMPRESS_LEVEL = 3
_PERCENTILE_SAMPLE = 1 << 20


def temp_beside(path: Path) -> Path:
    """A hidden, unique temp name in `path`'s folder that keeps its suffix (`.stem.tmp-XXXXXXXX.png`).

    Every temp file and folder anydepth writes among its outputs is named so (`is_temp_name`)."""
    return path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")


def is_temp_name(name: str) -> bool:
    """Whether `name` is one of `temp_beside`'s names."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_temp_files(folders: Iterable[Path]) -> int:
    """Delete the temp files and folders (`is_temp_name`) directly inside each of `folders`; how many were removed."""
    removed = 0
    for folder in set(map(Path, folders)):
        try:
            entries = [entry for entry in os.scandir(folder) if is_temp_name(entry.name)]
        except OSError:  # a folder not made yet holds nothing to remove
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
    return removed


@contextlib.contextmanager
def claim_output_dir(root: Path, folders: Iterable[Path]) -> Iterator[int | None]:
    """Hold the output folder `root` for the run inside the `with`, first removing the temp files that earlier,
    killed runs left in `folders` (`remove_temp_files`); yields how many, or None when they were left alone.

    Each run holds a shared lock on `root` while it writes; the temp files are removed only when this run is
    the only one holding it, so runs writing into one folder at once (shards, two terminals) never delete each
    other's work. Where folders cannot be locked (Windows, some network file systems) nothing is removed.
    """
    try:
        import fcntl

        descriptor = os.open(root, os.O_RDONLY)
    except (ImportError, OSError):
        yield None
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another run holds the folder, or it cannot be locked
            removed = None
        else:
            removed = remove_temp_files(folders)
        with contextlib.suppress(OSError):
            fcntl.flock(descriptor, fcntl.LOCK_SH)
        yield removed
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write: Callable[[Path], None], fsync: bool = False) -> None:
    """Have `write` write a temp file beside `path`, then rename it onto `path`.

    Parent folders are created. The temp name is hidden and keeps `path`'s suffix
    (`.stem.tmp-XXXXXXXX.png`) so writers that pick the format by suffix still work. On any
    exception, KeyboardInterrupt included, the temp file is removed and `path` is left as it
    was. With `fsync`, file and folder are flushed to disk. OSErrors become OutputError.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {folder}: {_reason(exc)}") from exc
    temp = temp_beside(path)
    try:
        write(temp)
        if fsync:
            with open(temp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temp, path)
        if fsync and os.name == "posix":
            descriptor = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {_reason(exc)}") from exc
        raise


def write_text(path: Path, text: str) -> None:
    """`text` (UTF-8) into `path`, atomically."""
    atomic_write(Path(path), lambda temp: temp.write_text(text, encoding="utf-8"))


def write_lines(path: Path, lines: list[str]) -> None:
    """One entry per line into `path`, atomically."""
    write_text(path, "".join(f"{line}\n" for line in lines))


def _reason(exc: OSError) -> str:
    return exc.strerror or " ".join(str(exc).split()) or type(exc).__name__


def available_cmaps() -> list[str]:
    """Names of the matplotlib colour maps `colorize` accepts, sorted."""
    import matplotlib  # imported on first use: it adds ~0.3 s to start-up

    return sorted(matplotlib.colormaps)


@functools.lru_cache(maxsize=None)
def _lut(cmap: str) -> np.ndarray:
    """The 256×3 uint8 lookup table of a matplotlib colour map (read-only, cached)."""
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise UsageError(
            f"unknown colour map {cmap!r}; try one of: {', '.join(_SUGGESTED_CMAPS)}"
        ) from None
    lut = np.round(colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def describe_kind(kind: str) -> str:
    """`depth (large = far)`, `disparity (large = near)` or `metric depth (metres, large = far)`."""
    if kind == "metric":
        return "metric depth (metres, large = far)"
    return f"{kind} (large = {'far' if kind == 'depth' else 'near'})"


def near_is_dark(kind: str, invert: bool = False) -> bool:
    """`colorize`'s `invert` that shows near bright for a map of `kind` (far bright with `invert`).

    `colorize` puts large values at the bright end: right for disparity (large = near), the
    wrong way round for depth (large = far).
    """
    return (kind != "disparity") != invert  # depth and metric depth: large = far


def colorize(
    values: np.ndarray,
    cmap: str = DEFAULT_CMAP,
    invert: bool = False,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map a float H×W map to RGB uint8 H×W×3 with a colour map (large = bright end; see `near_is_dark`).

    Values are normalised by `value_range` (low, high) or else by the 1st and 99th
    percentiles of the finite values (min and max if those coincide); values outside are
    clipped. A constant map gets the colour map's low end. Non-finite values are black.
    `invert` flips the colour map. Unknown `cmap` or a bad `value_range` raise UsageError.
    """
    lut = _lut(cmap)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"the map must be H×W, got shape {values.shape}")
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    low, high = normalisation_range(values if all_finite else values[finite], value_range)
    if not all_finite:
        values = np.where(finite, values, np.float32(low))
    scale = 255.0 / (high - low) if high > low else 0.0
    levels = (values - np.float32(low)) * np.float32(scale)
    if invert:
        levels = 255.0 - levels
    np.clip(levels, 0.0, 255.0, out=levels)
    rgb = lut[(levels + 0.5).astype(np.uint8)]
    if not all_finite:
        rgb[~finite] = 0
    return rgb


def colorize_tensor(values: torch.Tensor, cmap: str = DEFAULT_CMAP, invert: bool = False) -> torch.Tensor:
    """`colorize` on the map's own device (a GPU), so that only the picture comes back: the same normalisation (the
    1st and 99th percentiles of the same subsample of finite values), look-up table and rounding, in float32;
    (H, W, 3) uint8 on that device."""
    import torch

    lut = torch.tensor(_lut(cmap), device=values.device)
    values = values.float()
    finite = torch.isfinite(values)
    all_finite = bool(finite.all())
    finite_values = (values if all_finite else values[finite]).flatten()
    sample = finite_values
    low = high = 0.0
    if sample.numel():
        if sample.numel() > _PERCENTILE_SAMPLE:
            sample = sample[:: sample.numel() // _PERCENTILE_SAMPLE]
        quantiles = torch.quantile(sample.double(), torch.tensor([0.01, 0.99], dtype=torch.float64,
                                                                 device=values.device))
        low, high = (float(v) for v in quantiles)
        if high <= low:
            low, high = float(finite_values.min()), float(finite_values.max())
    if not all_finite:
        values = torch.where(finite, values, torch.tensor(low, dtype=torch.float32, device=values.device))
    scale = 255.0 / (high - low) if high > low else 0.0
    levels = (values - torch.tensor(low, dtype=torch.float32)) * torch.tensor(scale, dtype=torch.float32)
    if invert:
        levels = 255.0 - levels
    rgb = lut[(levels.clamp(0.0, 255.0) + 0.5).to(torch.uint8).long()]
    if not all_finite:
        rgb[~finite] = 0
    return rgb


def normalisation_range(
    finite_values: np.ndarray, value_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The (low, high) `colorize` maps to the ends of the colour map: `value_range`, else the 1st and 99th
    percentiles of `finite_values` (min and max where those coincide); (0, 0) when there are none."""
    if value_range is not None:
        low, high = (float(v) for v in value_range)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise UsageError(f"invalid value range {low}..{high}: need finite low < high")
        return low, high
    if finite_values.size == 0:
        return 0.0, 0.0
    sample = finite_values.ravel()
    if sample.size > _PERCENTILE_SAMPLE:
        sample = sample[:: sample.size // _PERCENTILE_SAMPLE]
    low, high = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    if high <= low:
        low, high = float(finite_values.min()), float(finite_values.max())
    return low, high


def side_by_side(rgb: np.ndarray, color: np.ndarray) -> np.ndarray:
    """The photo and its colour depth map next to each other (both H×W×3 of the same height)."""
    if rgb.shape[0] != color.shape[0]:
        raise ValueError(f"heights differ: {rgb.shape[0]} and {color.shape[0]}")
    return np.concatenate([rgb, color], axis=1)


def write_color_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 H×W×3 array as an 8-bit colour PNG."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    atomic_write(path, functools.partial(_save_png, image, None))


def _save_png(image: Image.Image, info: PngImagePlugin.PngInfo | None, temp: Path) -> None:
    image.save(temp, format="PNG", pnginfo=info, compress_level=_PNG_COMPRESS_LEVEL)


def write_npy(path: Path, values: np.ndarray) -> None:
    """Write a depth or disparity map as a float32 .npy array."""
    values = np.asarray(values, dtype=np.float32)

    def save(temp: Path) -> None:
        with open(temp, "wb") as handle:
            np.save(handle, values)

    atomic_write(path, save)


def png16_step(kind: str, values: np.ndarray) -> float | None:
    """The fixed depth in metres of one 16-bit level for a map of `kind`: a millimetre for metric maps that fit
    (up to 65.535 m), else KITTI's 1/256 m (up to 256 m); None for affine-invariant maps (scaled per image)."""
    if kind != "metric":
        return None
    finite = np.asarray(values)[np.isfinite(values)]
    return 0.001 if not finite.size or float(finite.max()) <= 65535 * 0.001 else 1.0 / 256.0


def write_png16(path: Path, values: np.ndarray, kind: str) -> None:
    """Write a `kind` map as a 16-bit grey PNG.

    Depth and disparity are scaled to their own finite min..max: min maps to 0 and max to 65535. Metric depth is
    written in fixed steps (`png16_step`: millimetres, or 1/256 m beyond 65.535 m), 0 meaning no depth. Both ends
    are stored as PNG text chunks (`anydepth_min`, `anydepth_max`) so that `d = min + v / 65535 * (max - min)` (see
    `read_png16`), and the kind as `anydepth_kind`. Non-finite values are stored as 0; a constant map is all 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"the map must be H×W, got shape {values.shape}")
    finite = np.isfinite(values)
    low, high = 0.0, 0.0
    step = png16_step(kind, values)
    if step is not None:
        low, high = 0.0, 65535 * step
    elif finite.any():
        low, high = float(values[finite].min()), float(values[finite].max())
    if high > low:
        scaled = (np.where(finite, values, low) - low) * (65535.0 / (high - low))
        levels = np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)
    else:
        levels = np.zeros(values.shape, dtype=np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG16_MIN_KEY, repr(low))
    info.add_text(PNG16_MAX_KEY, repr(high))
    info.add_text(PNG16_KIND_KEY, kind)
    atomic_write(path, functools.partial(_save_png, Image.fromarray(levels), info))


def write_exr(path: Path, values: np.ndarray, kind: str) -> None:
    """Write a `kind` (depth or disparity) map as a single-channel 32-bit float OpenEXR image.

    The values are stored as they are (non-finite ones too) in channel `EXR_CHANNEL`, ZIP-compressed
    (lossless), with the kind in the header attribute `anydepth_kind`.
    """
    import OpenEXR  # imported on first use, like the other format libraries of a run

    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"the map must be H×W, got shape {values.shape}")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, EXR_KIND_KEY: kind}

    def save(temp: Path) -> None:
        try:
            with OpenEXR.File(header, {EXR_CHANNEL: values}) as image:
                image.write(str(temp))
        except RuntimeError as exc:  # OpenEXR's I/O errors
            raise OSError(str(exc)) from exc

    atomic_write(path, save)


def read_png16(path: Path) -> np.ndarray:
    """Read a PNG written by `write_png16` back to its float32 map (InputError otherwise)."""
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}))
            if not (image.mode.startswith("I;16") or image.mode == "I") or not (
                PNG16_MIN_KEY in text and PNG16_MAX_KEY in text
            ):
                raise InputError(
                    f"not a 16-bit depth PNG from anydepth (mode {image.mode}, "
                    f"needs {PNG16_MIN_KEY}/{PNG16_MAX_KEY} text chunks)"
                )
            levels = np.asarray(image, dtype=np.float64)
        low, high = float(text[PNG16_MIN_KEY]), float(text[PNG16_MAX_KEY])
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read 16-bit depth PNG ({' '.join(str(exc).split())})") from exc
    return (low + levels / 65535.0 * (high - low)).astype(np.float32)


def prepare_output_dir(path: Path) -> None:
    """Create the output folder and check it can be written, before any work starts."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None
