"""Photos through the streaming engine: decoded ahead → predicted in batches (or tiles) → every output written behind."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from anydepth_cli.inference.engine import Engine, Loaded, Outcome, Prediction, TilePolicy
from anydepth_cli.inference.predictor import MapPredictor
from anydepth_cli.inference.tiling import TileConfig, should_tile
from anydepth_cli.io.colorbar import picture_with_colorbar
from anydepth_cli.io.images import InputItem, read_image
from anydepth_cli.io.writers import (
    DEFAULT_CMAP,
    colorize,
    colorize_tensor,
    near_is_dark,
    side_by_side,
    write_color_png,
    write_exr,
    write_npy,
    write_png16,
)

if TYPE_CHECKING:
    import torch

    from anydepth_cli.pipelines.geometry import CameraOptions, PointCloudOptions


@dataclass(frozen=True)
class OutputOptions:
    """Which files to write for each image, and how."""

    out_dir: Path
    cmap: str
    invert: bool = False
    raw: str | None = None
    side_by_side: bool = False
    confidence: bool = False
    pointcloud: PointCloudOptions | None = None
    colorbar: bool = False
    camera: CameraOptions | None = None
    """Where the camera comes from and which geometry to write: given, each photo gets a camera sidecar and the
    cloud and mesh it asks for, made with the `pointcloud` settings."""

    def paths(self, item: InputItem, kind: str) -> dict[str, Path]:
        """Every output file of `item`, mirroring its relative path under `out_dir`; raw files are named for
        the model's output `kind` (`photo_depth.npy` or `photo_disparity.npy`)."""
        base = self.out_dir / item.relative.parent / item.relative.stem
        paths = {"color": base.with_name(base.name + "_depth.png")}
        if self.raw == "npy":
            paths["raw"] = base.with_name(f"{base.name}_{kind}.npy")
        elif self.raw == "png16":
            paths["raw"] = base.with_name(f"{base.name}_{kind}16.png")
        elif self.raw == "exr":
            paths["raw"] = base.with_name(f"{base.name}_{kind}.exr")
        if self.side_by_side:
            paths["side"] = base.with_name(base.name + "_side.png")
        if self.confidence:
            paths["confidence"] = base.with_name(base.name + "_confidence.png")
        if self.camera is not None:
            paths.update(self.camera.paths(base))
        return paths


@dataclass(frozen=True)
class TilingOptions:
    """`--tile off|on|auto` and the tile geometry."""

    mode: str
    config: TileConfig

    def applies(self, image: np.ndarray, input_size: int) -> bool:
        if self.mode == "auto":
            return should_tile(*image.shape[:2], input_size)
        return self.mode == "on"

    def policy(self, input_size: int) -> TilePolicy:
        """The engine's tiling policy: this geometry for the images it applies to at `input_size`."""
        return lambda image: self.config if self.applies(image, input_size) else None


class Reporter(Protocol):
    """Where progress goes (a rich progress bar in the CLI)."""

    def image_done(self, item: InputItem, error: str | None) -> None: ...

    def tiles(self, item: InputItem, done: int, total: int) -> None: ...


@dataclass
class Summary:
    """What a run did: images written, skipped as already done, failed with reasons, pixels, time."""

    written: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    tiled: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_images(
    items: Sequence[InputItem],
    predictor: MapPredictor,
    outputs: OutputOptions,
    tiling: TilingOptions,
    reporter: Reporter,
    max_pixels: int | None,
    skip_existing: bool = False,
    batch_size: int = 1,
) -> Summary:
    """Predict and write every item through the streaming engine (photos decoded ahead, written behind); one bad
    file is recorded in the summary and never stops the run."""
    summary = Summary()
    start = time.perf_counter()
    kind = predictor.output_kind
    todo = [item for item in items if not (skip_existing and _skip_if_done(item, kind, outputs, summary, reporter))]

    def load(item: InputItem) -> Loaded:
        return Loaded(read_image(item.path, max_pixels))

    def finish(item: InputItem, loaded: Loaded, prediction: Prediction) -> tuple[str | None, bool]:
        note = write_outputs(item, loaded.image, prediction.values, kind, prediction.confidence, outputs,
                             prediction.extras.get("picture"))
        return note, prediction.tiles > 0

    def picture(values: torch.Tensor) -> dict[str, np.ndarray]:
        return {"picture": colorize_tensor(values, outputs.cmap, near_is_dark(kind, outputs.invert)).cpu().numpy()}

    engine = Engine(predictor, batch_size, tiling=tiling.policy(predictor.input_size), confidence=outputs.confidence,
                    tile_progress=reporter.tiles, on_device=None if outputs.colorbar else picture)
    try:
        for outcome in engine.stream(todo, load, finish):
            _record(outcome, summary, reporter)
    finally:
        summary.seconds = time.perf_counter() - start
    return summary


def _skip_if_done(item: InputItem, kind: str, outputs: OutputOptions, summary: Summary, reporter: Reporter) -> bool:
    """Whether every output of `item` exists (then it counts as skipped)."""
    if not all(path.exists() for path in outputs.paths(item, kind).values()):
        return False
    summary.skipped += 1
    reporter.image_done(item, None)
    return True


def _record(outcome: Outcome[InputItem, tuple[str | None, bool]], summary: Summary, reporter: Reporter) -> None:
    """Count one photo's outcome (its point-cloud note, whether it ran by tiles) and report it."""
    item = outcome.job
    if outcome.error is not None:
        summary.failed.append((item.path, str(outcome.error)))
        reporter.image_done(item, str(outcome.error))
        return
    note, tiled = outcome.result
    summary.written += 1
    summary.tiled += tiled
    if note:
        summary.notes.append(f"{item.relative}: {note}")
    reporter.image_done(item, None)


def write_outputs(item: InputItem, image: np.ndarray, values: np.ndarray, kind: str,
                  confidence: np.ndarray | None, outputs: OutputOptions, picture: np.ndarray | None = None) -> str | None:
    """Write every requested file for one image's map of `kind` (depth or disparity), with its colour `picture` when
    it was made already (on the GPU); returns a note to show the user (point-cloud settings)."""
    paths = outputs.paths(item, kind)
    if outputs.colorbar:
        color = picture_with_colorbar(values, kind, outputs.cmap, outputs.invert)
    else:
        color = picture if picture is not None else depth_picture(values, kind, outputs.cmap, outputs.invert)
    write_color_png(paths["color"], color)
    if outputs.raw == "npy":
        write_npy(paths["raw"], values)
    elif outputs.raw == "png16":
        write_png16(paths["raw"], values, kind)
    elif outputs.raw == "exr":
        write_exr(paths["raw"], values, kind)
    if outputs.side_by_side:
        write_color_png(paths["side"], side_by_side(image, color))
    if "confidence" in paths:
        level = confidence if confidence is not None else np.ones_like(values)
        write_color_png(paths["confidence"], colorize(level, "gray", value_range=(0.0, 1.0)))
    if outputs.camera is not None:
        from anydepth_cli.pipelines.geometry import write_geometry

        return write_geometry(paths, item.path, image, values, kind, outputs.camera, outputs.pointcloud)
    return None


def depth_picture(values: np.ndarray, kind: str, cmap: str = DEFAULT_CMAP, invert: bool = False,
                  value_range: tuple[float, float] | None = None) -> np.ndarray:
    """The colour picture (RGB uint8) of a map of `kind`: near bright, far bright with `invert`."""
    return colorize(values, cmap, near_is_dark(kind, invert), value_range)
