"""Photos through the network: read ahead → predict in batches (or tiles) → write every output."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from anydepth_cli.errors import AnyDepthError, InputError
from anydepth_cli.inference.predictor import MapPredictor
from anydepth_cli.inference.tiling import TileConfig, predict_tiled, should_tile
from anydepth_cli.io.colorbar import picture_with_colorbar
from anydepth_cli.io.images import InputItem, prefetch_images
from anydepth_cli.io.writers import (
    DEFAULT_CMAP,
    colorize,
    near_is_dark,
    side_by_side,
    write_color_png,
    write_exr,
    write_npy,
    write_png16,
)

if TYPE_CHECKING:
    from anydepth_cli.geometry.camera import Intrinsics
    from anydepth_cli.pipelines.geometry import CameraOptions
    from anydepth_cli.geometry.pointcloud import PointCloud

@dataclass(frozen=True)
class PointCloudOptions:
    """Camera and cleaning settings for `--pointcloud`."""

    fov: float | None = None
    focal: float | None = None
    near: float | None = None
    far: float | None = None
    depth_at: tuple[int, int, float] | None = None
    edge_threshold: float | None = 0.05
    max_points: int | None = 2_000_000
    normals: bool = False


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
    """Predict and write every item; one bad file is recorded in the summary and never stops the run."""
    run = _PhotoRun(predictor, outputs, tiling, reporter, batch_size)
    start = time.perf_counter()
    todo = [item for item in items if not (skip_existing and run.skip_if_done(item))]
    reader = prefetch_images(todo, max_pixels, ahead=max(8, 2 * batch_size))
    try:
        for item, image in reader:
            run.take(item, image)
        run.flush()
    finally:
        reader.close()
        run.summary.seconds = time.perf_counter() - start
    return run.summary


class _PhotoRun:
    """One `run_images` call: photos are batched for the network or tiled, then written, each failure recorded."""

    def __init__(self, predictor: MapPredictor, outputs: OutputOptions, tiling: TilingOptions, reporter: Reporter,
                 batch_size: int) -> None:
        self.predictor, self.outputs, self.tiling, self.reporter = predictor, outputs, tiling, reporter
        self.batch_size = batch_size
        self.summary = Summary()
        self.pending: list[tuple[InputItem, np.ndarray]] = []

    def skip_if_done(self, item: InputItem) -> bool:
        """Whether every output of `item` exists (then it counts as skipped)."""
        if not all(p.exists() for p in self.outputs.paths(item, self.predictor.output_kind).values()):
            return False
        self.summary.skipped += 1
        self.reporter.image_done(item, None)
        return True

    def take(self, item: InputItem, image: np.ndarray | AnyDepthError) -> None:
        """One photo as read: a read error is recorded, a large photo tiled, the others batched."""
        if isinstance(image, AnyDepthError):
            self.fail(item, image)
        elif self.tiling.applies(image, self.predictor.input_size):
            self.tile(item, image)
        else:
            self.pending.append((item, image))
            if len(self.pending) >= self.batch_size:
                self.flush()

    def fail(self, item: InputItem, exc: AnyDepthError) -> None:
        self.summary.failed.append((item.path, str(exc)))
        self.reporter.image_done(item, str(exc))

    def finish(self, item: InputItem, image: np.ndarray, values: np.ndarray, confidence: np.ndarray | None) -> None:
        """Write the outputs of one photo."""
        try:
            note = write_outputs(item, image, values, self.predictor.output_kind, confidence, self.outputs)
        except AnyDepthError as exc:
            self.fail(item, exc)
            return
        self.summary.written += 1
        if note:
            self.summary.notes.append(f"{item.relative}: {note}")
        self.reporter.image_done(item, None)

    def tile(self, item: InputItem, image: np.ndarray) -> None:
        """Predict one photo by tiles and write it."""
        try:
            result = predict_tiled(image, self.predictor, self.tiling.config, _bind(self.reporter.tiles, item),
                                   confidence=self.outputs.confidence)
        except InputError as exc:
            self.fail(item, exc)
            return
        self.summary.tiled += 1
        self.finish(item, image, result.values, result.confidence)

    def flush(self) -> None:
        """Predict the pending photos as one batch and write them."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            maps = self.predictor.predict_batch([image for _, image in batch])
        except InputError as exc:
            if len(batch) == 1:
                self.fail(batch[0][0], exc)
                return
            # An image did not fit in memory even alone: run them one by one so only it fails.
            for entry in batch:
                self.pending.append(entry)
                self.flush()
            return
        for (item, image), values in zip(batch, maps):
            self.finish(item, image, values, None)


def _bind(callback: Callable[[InputItem, int, int], None], item: InputItem) -> Callable[[int, int], None]:
    return lambda done, total: callback(item, done, total)


def write_outputs(item: InputItem, image: np.ndarray, values: np.ndarray, kind: str,
                  confidence: np.ndarray | None, outputs: OutputOptions) -> str | None:
    """Write every requested file for one image's map of `kind` (depth or disparity); returns a note to show
    the user (point-cloud settings)."""
    paths = outputs.paths(item, kind)
    color = (picture_with_colorbar(values, kind, outputs.cmap, outputs.invert) if outputs.colorbar
             else depth_picture(values, kind, outputs.cmap, outputs.invert))
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


def write_point_cloud(path: Path, image: np.ndarray, values: np.ndarray, kind: str, options: PointCloudOptions,
                      exif_focal_35mm: float | None = None) -> str:
    """Build the point cloud of one image and its map of `kind` and write it as PLY; returns what was done."""
    from anydepth_cli.io.ply import write_ply

    cloud, camera = make_point_cloud(image, values, kind, options, exif_focal_35mm)
    write_ply(path, cloud.points, cloud.colors, cloud.normals)
    return f"{len(cloud.points):,} points, camera {camera.source}; {cloud.description}"


def make_point_cloud(image: np.ndarray, values: np.ndarray, kind: str, options: PointCloudOptions,
                     exif_focal_35mm: float | None = None) -> tuple[PointCloud, Intrinsics]:
    """The point cloud of one RGB image and its map of `kind`, and the camera it was unprojected with."""
    from anydepth_cli.geometry.camera import intrinsics_for
    from anydepth_cli.pipelines.geometry import make_cloud

    height, width = values.shape
    camera = intrinsics_for(width, height, fov=options.fov, focal=options.focal, exif_focal_35mm=exif_focal_35mm)
    return make_cloud(image, values, kind, options, camera), camera


def depth_picture(values: np.ndarray, kind: str, cmap: str = DEFAULT_CMAP, invert: bool = False,
                  value_range: tuple[float, float] | None = None) -> np.ndarray:
    """The colour picture (RGB uint8) of a map of `kind`: near bright, far bright with `invert`."""
    return colorize(values, cmap, near_is_dark(kind, invert), value_range)
