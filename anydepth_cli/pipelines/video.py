"""Videos through the streaming engine: decode ahead → predict in batches (or tiles) → stabilise → write.

Decoding runs in the engine's feeder thread and the network on its device thread
(`inference.engine`); colour mapping runs in a colouring thread (each frame is coloured once for
both the depth and the side-by-side video), and each output (colour video, side-by-side video,
raw maps) in its own writer thread, all linked by bounded queues. Only the (cheap, subsampled)
stabilisation runs on the caller's thread, in frame order; decoding, the network, colour mapping
and encoding overlap. Outputs are published under their final names only when
the whole run succeeds; an interrupted or failed run keeps what was written as partial outputs
(see `anydepth_cli.io.video`). `run_videos` takes many clips one after another.

Outputs for `clip.mp4` (`VideoOptions.paths`), in the output folder:
`clip_depth.mp4` colour depth video at the source size and a frame rate of the source's divided
by `stride` (so that it plays as long as the selected stretch of the source; `.mkv` for FFV1,
see `anydepth_cli.io.encoders`), `clip_side.mp4` (with `side_by_side`) the input beside it, and
with `raw` the model's own quantity, named for it (KIND is `depth` or `disparity`):
`clip_KIND.npz` (`KIND` N×H×W float16, `frame_index` the source frame numbers, `fps`), or a
numbered sequence of 32-bit float OpenEXR files `clip_KIND/clip_KIND.000001.exr` or of 16-bit PNGs
`clip_KIND16/clip_KIND16.000001.png` (scaled as `write_png16` describes), numbered by source frame
from 1 as editors and compositors count. Colours show near bright for either kind.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from anydepth_cli.errors import AnyDepthError, InputError
from anydepth_cli.geometry.camera import Intrinsics
from anydepth_cli.inference.align import Affine
from anydepth_cli.inference.engine import Engine, Loaded, Outcome, Prediction
from anydepth_cli.inference.predictor import MapPredictor
from anydepth_cli.inference.stabilize import ClipColourRange, FrameStabilizer
from anydepth_cli.io.encoders import CODECS, OPENCV_CODECS, open_video_writer
from anydepth_cli.io.images import InputItem
from anydepth_cli.io.video import BackgroundSink, BackgroundWorker, FrameReader, ImageSequenceSink, NpzFramesSink
from anydepth_cli.io.writers import DEFAULT_CMAP, side_by_side, write_exr, write_png16
from anydepth_cli.pipelines.geometry import (
    CameraOptions,
    PointCloudOptions,
    photo_record,
    write_camera_record,
    write_cloud,
)
from anydepth_cli.pipelines.photos import TilingOptions, depth_picture

@dataclass(frozen=True)
class VideoOptions:
    """Which frames to read, whether to stabilise, and which outputs to write, and how."""

    out_dir: Path
    cmap: str = DEFAULT_CMAP
    invert: bool = False
    raw: str | None = None
    side_by_side: bool = False
    stabilize: bool = True
    start: int = 0
    max_frames: int | None = None
    stride: int = 1
    codec: str = "h264"
    """h264, mp4v or ffv1 (`anydepth_cli.io.encoders`); FFV1 depth videos are grey whatever `cmap`."""
    opencv_codecs: Sequence[tuple[str, str]] = OPENCV_CODECS
    pointcloud: PointCloudOptions | None = None
    pointcloud_stride: int = 10
    camera: CameraOptions = CameraOptions()
    """The camera every frame was taken with (`--focal`/`--fov`, else the default) and the model: recorded in the
    frame archive (its `camera` key, the JSON of `clip_camera.json`), in each frame's cloud, and, with clouds or a
    metric model, in `clip_camera.json`."""

    @property
    def picture_cmap(self) -> str:
        """The colour map of the depth pictures: `cmap`, or grey levels for a lossless FFV1 video."""
        return "gray" if self.codec == "ffv1" else self.cmap

    def paths(self, relative: Path, kind: str) -> dict[str, Path]:
        """Every output of the clip at `relative` (its path under the input folder), by kind (`depth`, `side`,
        `raw`, `clouds`), mirroring it under `out_dir`; raw outputs are named for the model's output `kind`."""
        base = self.out_dir / relative.parent / relative.stem
        suffix = CODECS[self.codec]
        paths = {"depth": base.with_name(f"{base.name}_depth{suffix}")}
        if self.side_by_side:
            paths["side"] = base.with_name(f"{base.name}_side{suffix}")
        raw_name = {"npz": f"{base.name}_{kind}.npz", "png16": f"{base.name}_{kind}16", "exr": f"{base.name}_{kind}"}
        if self.raw is not None:
            paths["raw"] = base.with_name(raw_name[self.raw])
        if self.pointcloud is not None:
            paths["clouds"] = base.with_name(base.name + "_clouds")
        if self.pointcloud is not None or kind == "metric":
            paths["camera"] = base.with_name(base.name + "_camera.json")
        return paths


class VideoReporter(Protocol):
    """Where progress goes (a rich progress bar in the CLI)."""

    def started(self, video: Path, total: int | None) -> None: ...

    def frames_done(self, count: int) -> None: ...

    def warn(self, message: str) -> None: ...


@dataclass
class VideoSummary:
    """What a video run did: frames written (of those expected), output frame rate and size
    (width, height), the files written by kind (`depth`, `side`, `raw`, `clouds`), warnings, time."""

    video: Path
    frames: int = 0
    expected: int | None = None
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    outputs: dict[str, Path] = field(default_factory=dict)
    tiled: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _FrameJob:
    """One predicted frame on its way to the writers: its stabilising fit (None: keep the
    prediction) and the colour range (None: the frame's own)."""

    index: int
    rgb: np.ndarray
    values: np.ndarray
    fit: Affine | None
    value_range: tuple[float, float] | None


class _Colourer(BackgroundWorker):
    """In its own thread: applies each frame's fit, colours the frame once, and hands the
    results to the writers."""

    def __init__(self, options: VideoOptions, kind: str, sinks: dict[str, BackgroundSink], queue_size: int) -> None:
        self.options = options
        self.kind = kind
        self.depth, self.side, self.raw = sinks["depth"], sinks.get("side"), sinks.get("raw")
        self.clouds = sinks.get("clouds")
        self.count = 0
        super().__init__("depth colours", queue_size)

    def _handle(self, job: _FrameJob) -> None:
        values = job.fit.apply(job.values) if job.fit is not None else job.values
        colour = depth_picture(values, self.kind, self.options.picture_cmap, self.options.invert, job.value_range)
        self.depth.put(colour)
        if self.side is not None:
            self.side.put(side_by_side(job.rgb, colour))
        if self.raw is not None:
            # The npz keeps the source's frame indices; sequence files count frames from 1, as editors do.
            self.raw.put((job.index if self.options.raw == "npz" else job.index + 1, values))
        if self.clouds is not None and self.count % self.options.pointcloud_stride == 0:
            self.clouds.put((job.index, (job.rgb, values)))
        self.count += 1


def _sequence_names(folder: Path, suffix: str) -> Callable[[int], str]:
    """File names of a numbered sequence in `folder`: `clip_depth/clip_depth.000001.exr`."""
    return lambda number: f"{folder.name}.{number:06d}{suffix}"


class _Outputs:
    """Every writer of one run, opened on the first frame, behind a colouring stage that feeds them."""

    def __init__(self, summary: VideoSummary, options: VideoOptions, paths: dict[str, Path], kind: str,
                 queue_size: int, warn: Callable[[str], None]) -> None:
        self.summary, self.options, self.paths, self.kind = summary, options, paths, kind
        self.queue_size, self.warn = queue_size, warn
        self.sinks: dict[str, BackgroundSink] = {}
        self.colourer: _Colourer | None = None
        self.record: dict[str, object] | None = None
        """The camera record of the clip, once its frame size is known."""

    def put(self, job: _FrameJob) -> None:
        """Queue one frame for every output."""
        colourer = self.colourer or self._open(job.rgb.shape[1], job.rgb.shape[0])
        colourer.put(job)

    def close(self) -> dict[str, Path]:
        """Write everything queued and publish each output under its final name, by kind."""
        if self.colourer is not None:
            self.colourer.join()
        written = {kind: sink.close() for kind, sink in self.sinks.items()}
        if "camera" in self.paths and self.record is not None:
            write_camera_record(self.paths["camera"], self.record)
            written["camera"] = self.paths["camera"]
        return written

    def abort(self) -> tuple[int, list[Path]]:
        """Write everything queued and keep it as partial outputs: (frames written, paths kept)."""
        if self.colourer is not None:
            self.colourer.stop()
        kept = [sink.abort() for sink in self.sinks.values()]
        written = max((sink.handled for sink in self.sinks.values()), default=0)
        return written, [path for path in kept if path is not None]

    def _open(self, width: int, height: int) -> _Colourer:
        self.summary.size = (width, height)
        camera, self.record = photo_record(None, (height, width), self.kind, self.options.camera)
        self._open_video("depth", (width, height), grey=self.options.codec == "ffv1")
        if "side" in self.paths:
            self._open_video("side", (2 * width, height))
        raw = self.paths.get("raw")
        if self.options.raw == "npz":
            self.sinks["raw"] = NpzFramesSink(raw, {"fps": self.summary.fps, "camera": json.dumps(self.record)},
                                              arrays_name=self.kind, queue_size=self.queue_size)
        elif raw is not None:
            write = write_exr if self.options.raw == "exr" else write_png16
            suffix = ".exr" if self.options.raw == "exr" else ".png"
            self.sinks["raw"] = ImageSequenceSink(raw, functools.partial(write, kind=self.kind), self.queue_size,
                                                  indexed=True, name=_sequence_names(raw, suffix))
        if "clouds" in self.paths:
            self._open_clouds(camera)
        self.colourer = _Colourer(self.options, self.kind, self.sinks, self.queue_size)
        return self.colourer

    def _open_video(self, output: str, size: tuple[int, int], grey: bool = False) -> None:
        options = self.options
        sink, note = open_video_writer(self.paths[output].with_suffix(""), self.summary.fps, size, options.codec,
                                       self.queue_size, grey, options.opencv_codecs)
        self.sinks[output] = sink
        if note:
            self.warn(note)

    def _open_clouds(self, camera: Intrinsics) -> None:
        kind, settings, record, axes = self.kind, self.options.pointcloud, self.record, self.options.camera.axes

        def save_cloud(path: Path, frame: tuple[np.ndarray, np.ndarray]) -> None:
            write_cloud(path, *frame, kind, settings, camera, record, axes)

        self.sinks["clouds"] = ImageSequenceSink(self.paths["clouds"], save_cloud, self.queue_size, indexed=True,
                                                 name="{:06d}.ply".format)


def run_video(
    video: Path,
    predictor: MapPredictor,
    options: VideoOptions,
    tiling: TilingOptions,
    reporter: VideoReporter,
    batch_size: int = 1,
    max_pixels: int | None = None,
    relative: Path | None = None,
) -> VideoSummary:
    """Predict every selected frame of `video` and write the outputs `options` asks for, named after
    `relative` (the clip's path under its input folder; default: its file name).

    Frames go through `predictor` `batch_size` at a time, or one by one through tiled
    inference when `tiling` applies to the frame size. Unless `options.stabilize` is off, each
    frame is aligned to the clip's running reference and all are coloured with one clip-wide
    range (see `anydepth_cli.inference.stabilize`); otherwise each frame is coloured by its own
    percentiles. A file that stops decoding early gives the frames decoded and a warning.
    Raises InputError when the video cannot be read or no frame decodes.
    """
    started = time.perf_counter()
    summary = VideoSummary(video=Path(video))
    relative = Path(relative or summary.video.name)
    queue_size = 2 * batch_size + 2
    with FrameReader(video, options.start, options.max_frames, options.stride) as reader:
        _check_frame_size(summary.video, reader, max_pixels)
        summary.expected, summary.fps = reader.expected, reader.info.fps / options.stride
        reporter.started(relative, reader.expected)

        def warn(message: str) -> None:
            summary.warnings.append(message)
            reporter.warn(message)

        kind = predictor.output_kind
        outputs = _Outputs(summary, options, options.paths(relative, kind), kind, queue_size, warn)
        engine = Engine(predictor, batch_size, tiling=tiling.policy(predictor.input_size))
        try:
            _write_frames(engine.stream(reader, _frame_image, _frame_prediction), outputs, options.stabilize,
                          summary, reporter)
            if summary.frames == 0:
                raise InputError(f"no frame of {summary.video} could be decoded from frame {options.start} on")
            summary.outputs = outputs.close()
        except BaseException:
            _abort(outputs, reporter)
            raise
        shortfall = reader.shortfall()
        if shortfall:
            warn(shortfall)
    summary.seconds = time.perf_counter() - started
    return summary


def _frame_image(frame: tuple[int, np.ndarray]) -> Loaded:
    return Loaded(frame[1])


def _frame_prediction(frame: tuple[int, np.ndarray], loaded: Loaded, prediction: Prediction) -> Prediction:
    return prediction


def _check_frame_size(video: Path, reader: FrameReader, max_pixels: int | None) -> None:
    """InputError when the clip's frames are over `max_pixels`."""
    width, height = reader.info.width, reader.info.height
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"{video.name}: frames are too large ({width}x{height} = {width * height} "
                         f"pixels, limit {max_pixels}); pass --max-pixels {width * height} to allow it")


def _write_frames(predicted: Iterator[Outcome[tuple[int, np.ndarray], Prediction]], outputs: _Outputs,
                  stabilize: bool, summary: VideoSummary, reporter: VideoReporter) -> None:
    """Hand each predicted frame, in order, to the writers, stabilised against the clip so far when `stabilize`;
    a frame that fails (it does not fit in memory) fails the clip."""
    stabilizer = FrameStabilizer() if stabilize else None
    colour_range = ClipColourRange() if stabilize else None
    for outcome in predicted:
        if outcome.error is not None:
            raise outcome.error
        (index, rgb), prediction = outcome.job, outcome.result
        values = prediction.values
        summary.tiled = summary.tiled or prediction.tiles > 0
        fit = value_range = None
        if stabilizer is not None and colour_range is not None:
            fit = stabilizer.fit(values)
            value_range = colour_range.update(values, fit)
        outputs.put(_FrameJob(index, rgb, values, fit, value_range))
        summary.frames += 1
        reporter.frames_done(1)


def _abort(outputs: _Outputs, reporter: VideoReporter) -> None:
    """Stop the writers, saying which partial outputs are kept."""
    written, kept = outputs.abort()
    if kept:
        reporter.warn(f"stopped: kept the {written} frame(s) written so far as " + ", ".join(str(path) for path in kept))


class ClipsReporter(VideoReporter, Protocol):
    """Where the progress of many clips goes: each clip's frames, and the clips skipped or failed."""

    def clip_skipped(self, relative: Path) -> None: ...

    def clip_failed(self, relative: Path, reason: str) -> None: ...


@dataclass
class ClipsSummary:
    """What a run over many clips did: each clip written, clips skipped as done, clips failed with reasons, time."""

    written: list[VideoSummary] = field(default_factory=list)
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


def run_videos(
    items: Sequence[InputItem],
    predictor: MapPredictor,
    options: VideoOptions,
    tiling: TilingOptions,
    reporter: ClipsReporter,
    batch_size: int = 1,
    max_pixels: int | None = None,
    skip_existing: bool = False,
) -> ClipsSummary:
    """`run_video` on each clip in turn, its outputs mirroring its relative path under `options.out_dir`.

    With `skip_existing`, a clip whose outputs all exist (each is published only when whole) is
    skipped; a clip that fails is recorded with its reason and the others go on.
    """
    summary = ClipsSummary()
    started = time.perf_counter()
    try:
        for item in items:
            outputs = options.paths(item.relative, predictor.output_kind).values()
            if skip_existing and all(path.exists() for path in outputs):
                summary.skipped += 1
                reporter.clip_skipped(item.relative)
                continue
            try:
                summary.written.append(run_video(item.path, predictor, options, tiling, reporter, batch_size,
                                                 max_pixels, item.relative))
            except AnyDepthError as exc:
                summary.failed.append((item.path, str(exc)))
                reporter.clip_failed(item.relative, str(exc))
    finally:
        summary.seconds = time.perf_counter() - started
    return summary
