"""Evaluation data: ground-truth readers, image/depth pairing and the eval loop."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image

from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.evaluation.metrics import KINDS, KindCheck, aggregate, evaluate_sample
from anydepth_cli.evaluation.presets import Preset

if TYPE_CHECKING:  # the protocol's module imports torch, which scoring workers do not need
    from anydepth_cli.inference.predictor import MapPredictor

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_SUFFIXES: tuple[str, ...] = (".png", ".npy", ".exr", ".pfm")
MASK_SUFFIXES: tuple[str, ...] = (".png", ".npy")

def _decode(path: Path) -> np.ndarray:
    """Decode an image file with OpenCV keeping its bit depth and channels; InputError if it cannot."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise InputError(f"cannot decode {path} as an image")
    return image


def _read_exr(path: Path) -> np.ndarray:
    """A single-channel EXR, or the red channel of a multi-channel one."""
    # OpenCV decodes EXR only with this set; it reads the variable at the first EXR decode, not
    # at import, so setting it here is enough. An explicit user setting is respected.
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    try:
        image = _decode(path)
    except InputError:
        raise InputError(
            f"cannot read EXR depth {path}: this OpenCV build has no OpenEXR support or the file is "
            "damaged; convert it to .npy or .pfm"
        ) from None
    return image if image.ndim == 2 else image[..., 2]


def _read_pfm(path: Path) -> np.ndarray:
    """A PFM file ("Pf" greyscale, or "PF" colour from which the red channel is taken)."""
    try:
        with open(path, "rb") as f:
            kind = f.readline().strip()
            if kind not in (b"Pf", b"PF"):
                raise InputError(f"{path} is not a PFM file")
            width, height = (int(v) for v in f.readline().split())
            scale = float(f.readline().strip())
            channels = 3 if kind == b"PF" else 1
            count = width * height * channels
            data = np.fromfile(f, dtype="<f4" if scale < 0 else ">f4", count=count)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read PFM {path}: {exc}") from None
    if data.size != count:
        raise InputError(f"PFM {path} is truncated")
    # PFM rows run bottom to top.
    return data.reshape(height, width, channels)[::-1, :, 0]


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
    if suffix == ".png":
        raw = _decode(path)
        if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
            raise InputError(f"depth PNG {path} must be single-channel 8- or 16-bit")
        depth = raw.astype(np.float64) / depth_scale
    elif suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        depth = np.squeeze(depth)
        if depth.ndim != 2 or depth.dtype.kind not in "fiu":
            raise InputError(f"depth array {path} must be 2-D real numbers, got {depth.dtype} {depth.shape}")
    elif suffix == ".exr":
        depth = _read_exr(path)
    elif suffix == ".pfm":
        depth = _read_pfm(path)
    else:
        raise InputError(f"unsupported depth format {path.suffix!r} for {path}; use {', '.join(DEPTH_SUFFIXES)}")
    depth = np.asarray(depth, dtype=np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(0.0))


def read_mask(path: str | Path) -> np.ndarray:
    """A validity mask (bool, H×W) from an image or `.npy`: nonzero (in any channel) = valid."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            mask = np.squeeze(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
    else:
        mask = _decode(path)
    if mask.ndim == 3:
        return np.any(mask != 0, axis=2)
    if mask.ndim != 2:
        raise InputError(f"mask {path} must be 2-D, got shape {mask.shape}")
    return mask != 0


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 H×W×3 (pixel grid as stored, no EXIF rotation, so it matches the GT)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


@dataclass(frozen=True)
class Pair:
    """One evaluation sample: an RGB image, its ground-truth depth and an optional validity mask."""

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


def read_manifest(path: str | Path) -> list[Pair]:
    """Pairs listed in a manifest: one `image,depth[,mask]` per line, relative to the manifest's folder.

    Blank lines and lines starting with `#` are ignored; paths may not contain commas. A malformed
    line or a missing file is a UsageError naming the line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read manifest {path}: {exc}") from None
    pairs: list[Pair] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) not in (2, 3) or not all(fields):
            raise UsageError(f"{path}:{number}: expected 'image,depth[,mask]', got {line!r}")
        files = [path.parent / f for f in fields]
        for file in files:
            if not file.is_file():
                raise UsageError(f"{path}:{number}: no such file {file}")
        pairs.append(Pair(files[0], files[1], files[2] if len(files) == 3 else None))
    if not pairs:
        raise UsageError(f"manifest {path} lists no pairs")
    return pairs


def load_pairs(data: Path) -> list[Pair]:
    """The samples named by DATA: a folder's pairs (`discover_pairs`), or a manifest file's lines."""
    data = Path(data)
    if data.is_dir():
        return discover_pairs(data)
    if data.is_file():
        return read_manifest(data)
    raise UsageError(f"{data}: no such folder or manifest file")


ALIGNMENT_MODES: tuple[str, ...] = ("model", *KINDS, "auto")
"""How to choose the space each model is aligned in: its declared kind, a kind for every model, or
the kind its predictions fit better."""


def check_alignment_mode(mode: str) -> str:
    """`mode` if it is one of ALIGNMENT_MODES; UsageError otherwise."""
    if mode not in ALIGNMENT_MODES:
        raise UsageError(f"--output-kind must be one of {', '.join(ALIGNMENT_MODES)}, not {mode!r}")
    return mode


@dataclass(frozen=True)
class Alignment:
    """The space one model was aligned in (`kind`), the kind it declares, and why that space.

    `source` is `declared`, `override` (a kind given for every model) or `detected` (the kind its
    predictions fit better, from `check`); `check` is set when both kinds were tried.
    """

    kind: str
    declared: str
    source: str
    check: KindCheck | None = None

    @property
    def label(self) -> str:
        """E.g. `depth (declared)`."""
        return f"{self.kind} ({self.source})"

    @property
    def agrees(self) -> bool:
        """Whether the space aligned in is the declared kind."""
        return self.kind == self.declared


@dataclass
class EvalResult:
    """Per-image rows for every model, per-model aggregates and alignments, and the samples that could not be scored.

    Each row holds `image`, `depth`, `model`, the metrics, `scale`, `shift`, `n_valid`,
    `aligned_as` (depth or disparity) and `kind_source` (as `Alignment.source`);
    `aggregates[model]` is `metrics.aggregate` over that model's rows; `alignments[model]` says
    which space it was aligned in; `failures` holds `(image path, reason)` for samples skipped
    for every model.
    """

    preset: str
    models: list[str]
    rows: list[dict[str, object]] = field(default_factory=list)
    aggregates: dict[str, dict[str, float]] = field(default_factory=dict)
    alignments: dict[str, Alignment] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _load(pair: Pair, preset: Preset, depth_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """RGB, GT depth and mask of a sample; InputError if unreadable or it has fewer than two valid pixels."""
    rgb = read_rgb(pair.image)
    gt = read_depth(pair.depth, depth_scale)
    mask = read_mask(pair.mask) if pair.mask is not None else None
    if int(preset.valid_mask(gt, mask).sum()) < 2:
        raise InputError(f"{pair.depth}: fewer than two valid ground-truth pixels under preset {preset.name!r}")
    return rgb, gt, mask


def _choose(declared: str, mode: str, rows: Mapping[str, list[dict[str, object]]]) -> Alignment:
    """The alignment of a model declaring `declared` under `mode`, given its rows per kind tried."""
    if mode == "model":
        return Alignment(declared, declared, "declared")
    if mode != "auto":
        return Alignment(mode, declared, "override")
    check = KindCheck(aggregate(rows["depth"])["abs_rel"], aggregate(rows["disparity"])["abs_rel"])
    if check.detected is None:
        return Alignment(declared, declared, "declared", check)
    return Alignment(check.detected, declared, "detected", check)


def run_eval(
    pairs: Sequence[Pair],
    predictors: Mapping[str, MapPredictor],
    preset: Preset,
    progress: Callable[[], None] | None = None,
    *,
    depth_scale: float | None = None,
    batch_size: int = 1,
    output_kind: str = "model",
) -> EvalResult:
    """Evaluate every predictor on every pair under `preset`.

    Images are read `batch_size` at a time and passed to each model's `predict_batch`; a
    prediction whose size differs from the ground truth is resized to it (bilinear).
    `output_kind` (one of ALIGNMENT_MODES) picks the space each model is aligned in: `model`,
    the predictor's `output_kind`; `depth` or `disparity`, that for all; `auto`, both are tried
    and the one with the lower mean AbsRel is reported. `depth_scale` overrides the preset's PNG
    divisor. A sample that cannot be read or has no valid pixels is recorded in `failures` and
    skipped. `progress` is called once per pair.
    """
    if not predictors:
        raise UsageError("no model to evaluate")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    mode = check_alignment_mode(output_kind)
    declared = {name: predictor.output_kind for name, predictor in predictors.items()}
    for name, kind in declared.items():
        if kind not in KINDS:
            raise UsageError(f"model {name!r} declares output {kind!r}, not one of {', '.join(KINDS)}")
    tried = {name: KINDS if mode == "auto" else (kind if mode == "model" else mode,)
             for name, kind in declared.items()}
    rows: dict[str, dict[str, list[dict[str, object]]]] = {
        name: {kind: [] for kind in kinds} for name, kinds in tried.items()
    }
    scale = preset.depth_scale if depth_scale is None else depth_scale
    result = EvalResult(preset=preset.name, models=list(predictors))
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        loaded: list[tuple[Pair, np.ndarray, np.ndarray, np.ndarray | None]] = []
        for pair in chunk:
            try:
                loaded.append((pair, *_load(pair, preset, scale)))
            except InputError as exc:
                result.failures.append((str(pair.image), str(exc)))
        if loaded:
            for name, predictor in predictors.items():
                predictions = predictor.predict_batch([rgb for _, rgb, _, _ in loaded])
                for (pair, _, gt, mask), pred in zip(loaded, predictions):
                    if pred.shape != gt.shape:
                        pred = cv2.resize(pred, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
                    for kind, kind_rows in rows[name].items():
                        row: dict[str, object] = {"image": str(pair.image), "depth": str(pair.depth), "model": name}
                        row.update(evaluate_sample(pred, gt, mask, preset, kind))
                        kind_rows.append(row)
        if progress is not None:
            for _ in chunk:
                progress()
    for name in result.models:
        alignment = _choose(declared[name], mode, rows[name])
        chosen = rows[name][alignment.kind]
        for row in chosen:
            row.update(aligned_as=alignment.kind, kind_source=alignment.source)
        result.rows.extend(chosen)
        result.alignments[name] = alignment
        result.aggregates[name] = aggregate(chosen)
    return result
