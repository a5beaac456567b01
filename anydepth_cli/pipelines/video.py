"""A video through the network: decode ahead → predict in batches (or tiles) → stabilise → write.

Decoding runs in a reader thread, colour mapping in a colouring thread (each frame is coloured
once for both the depth and the side-by-side video), and each output (colour video,
side-by-side video, raw maps) in its own writer thread, all linked by bounded queues. Only
prediction and the (cheap, subsampled) stabilisation run on the caller's thread; decoding,
colour mapping and encoding overlap with the network and with each other. Outputs are published under their final names only when
the whole run succeeds; an interrupted or failed run keeps what was written as partial outputs
(see `anydepth_cli.io.video`).

Outputs for `clip.mp4`, in the output folder:
`clip_depth.mp4` colour depth video at the source size and a frame rate of the source's divided
by `stride` (so that it plays as long as the selected stretch of the source), `clip_side.mp4`
(with `side_by_side`) the input beside it, and with `raw` the model's own quantity, named for
it (KIND is `depth` or `disparity`): `clip_KIND.npz` (`KIND` N×H×W float16, `frame_index` the
source frame numbers, `fps`) or `clip_KIND16/` (one 16-bit PNG per frame, scaled as
`write_png16` describes). Colours show near bright for either kind.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from anydepth_cli.errors import InputError
from anydepth_cli.inference.align import Affine
from anydepth_cli.inference.predictor import MapPredictor
from anydepth_cli.inference.stabilize import ClipColourRange, FrameStabilizer
from anydepth_cli.inference.tiling import predict_tiled
from anydepth_cli.io.video import (
    VIDEO_CODECS,
    BackgroundSink,
    BackgroundWorker,
    FrameReader,
    ImageSequenceSink,
    NpzFramesSink,
    open_video_writer,
)
from anydepth_cli.io.writers import DEFAULT_CMAP, side_by_side, write_png16
from anydepth_cli.pipelines.photos import PointCloudOptions, TilingOptions, depth_picture, write_point_cloud

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
    codecs: Sequence[tuple[str, str]] = VIDEO_CODECS
    pointcloud: PointCloudOptions | None = None
    pointcloud_stride: int = 10


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
        colour = depth_picture(values, self.kind, self.options.cmap, self.options.invert, job.value_range)
        self.depth.put(colour)
        if self.side is not None:
            self.side.put(side_by_side(job.rgb, colour))
        if self.raw is not None:
            self.raw.put((job.index, values) if self.options.raw == "npz" else values)
        if self.clouds is not None and self.count % self.options.pointcloud_stride == 0:
            self.clouds.put((job.index, (job.rgb, values)))
        self.count += 1


class _Outputs:
    """Every writer of one run, opened on the first frame, behind a colouring stage that feeds them."""

    def __init__(self, summary: VideoSummary, options: VideoOptions, kind: str, queue_size: int,
                 warn: Callable[[str], None]) -> None:
        self.summary, self.options, self.kind, self.queue_size, self.warn = summary, options, kind, queue_size, warn
        self.sinks: dict[str, BackgroundSink] = {}
        self.colourer: _Colourer | None = None

    def put(self, job: _FrameJob) -> None:
        """Queue one frame for every output."""
        colourer = self.colourer or self._open(job.rgb.shape[1], job.rgb.shape[0])
        colourer.put(job)

    def close(self) -> dict[str, Path]:
        """Write everything queued and publish each output under its final name, by kind."""
        if self.colourer is not None:
            self.colourer.join()
        return {kind: sink.close() for kind, sink in self.sinks.items()}

    def abort(self) -> tuple[int, list[Path]]:
        """Write everything queued and keep it as partial outputs: (frames written, paths kept)."""
        if self.colourer is not None:
            self.colourer.stop()
        kept = [sink.abort() for sink in self.sinks.values()]
        written = max((sink.handled for sink in self.sinks.values()), default=0)
        return written, [path for path in kept if path is not None]

    def _open(self, width: int, height: int) -> _Colourer:
        options, summary, kind = self.options, self.summary, self.kind
        summary.size = (width, height)
        base = options.out_dir / summary.video.stem
        depth, note = open_video_writer(base.with_name(base.name + "_depth"), summary.fps, (width, height),
                                        options.codecs, self.queue_size)
        self.sinks["depth"] = depth
        notes = [note]
        if options.side_by_side:
            side, note = open_video_writer(base.with_name(base.name + "_side"), summary.fps, (2 * width, height),
                                           options.codecs, self.queue_size)
            self.sinks["side"] = side
            notes.append(note)
        if options.raw == "npz":
            self.sinks["raw"] = NpzFramesSink(base.with_name(f"{base.name}_{kind}.npz"), {"fps": summary.fps},
                                              arrays_name=kind, queue_size=self.queue_size)
        elif options.raw == "png16":
            self.sinks["raw"] = ImageSequenceSink(base.with_name(f"{base.name}_{kind}16"),
                                                  functools.partial(write_png16, kind=kind), self.queue_size)
        if options.pointcloud is not None:
            cloud_options = options.pointcloud

            def save_cloud(path: Path, frame: tuple[np.ndarray, np.ndarray]) -> None:
                write_point_cloud(path, *frame, kind, cloud_options)

            self.sinks["clouds"] = ImageSequenceSink(base.with_name(base.name + "_clouds"), save_cloud,
                                                     self.queue_size, indexed=True, suffix=".ply")
        for message in notes:
            if message:
                self.warn(message)
        self.colourer = _Colourer(options, kind, self.sinks, self.queue_size)
        return self.colourer


def run_video(
    video: Path,
    predictor: MapPredictor,
    options: VideoOptions,
    tiling: TilingOptions,
    reporter: VideoReporter,
    batch_size: int = 1,
    max_pixels: int | None = None,
) -> VideoSummary:
    """Predict every selected frame of `video` and write the outputs `options` asks for.

    Frames go through `predictor` `batch_size` at a time, or one by one through tiled
    inference when `tiling` applies to the frame size. Unless `options.stabilize` is off, each
    frame is aligned to the clip's running reference and all are coloured with one clip-wide
    range (see `anydepth_cli.inference.stabilize`); otherwise each frame is coloured by its own
    percentiles. A file that stops decoding early gives the frames decoded and a warning.
    Raises InputError when the video cannot be read or no frame decodes.
    """
    started = time.perf_counter()
    summary = VideoSummary(video=Path(video))
    queue_size = 2 * batch_size + 2
    with FrameReader(video, options.start, options.max_frames, options.stride, queue_size) as reader:
        width, height = reader.info.width, reader.info.height
        if max_pixels is not None and width * height > max_pixels:
            raise InputError(f"{summary.video.name}: frames are too large ({width}x{height} = {width * height} "
                             f"pixels, limit {max_pixels}); pass --max-pixels {width * height} to allow it")
        summary.expected, summary.fps = reader.expected, reader.info.fps / options.stride
        reporter.started(summary.video, reader.expected)

        def warn(message: str) -> None:
            summary.warnings.append(message)
            reporter.warn(message)

        outputs = _Outputs(summary, options, predictor.output_kind, queue_size, warn)
        stabilizer = FrameStabilizer() if options.stabilize else None
        colour_range = ClipColourRange() if options.stabilize else None

        def emit(frames: list[tuple[int, np.ndarray]], maps: list[np.ndarray]) -> None:
            for (index, rgb), values in zip(frames, maps):
                fit = value_range = None
                if stabilizer is not None and colour_range is not None:
                    fit = stabilizer.fit(values)
                    value_range = colour_range.update(values, fit)
                outputs.put(_FrameJob(index, rgb, values, fit, value_range))
            summary.frames += len(frames)
            reporter.frames_done(len(frames))

        try:
            batch: list[tuple[int, np.ndarray]] = []
            for index, frame in reader:
                if summary.frames == 0 and not batch:
                    summary.tiled = tiling.applies(frame, predictor.input_size)
                if summary.tiled:
                    emit([(index, frame)], [predict_tiled(frame, predictor, tiling.config).values])
                    continue
                batch.append((index, frame))
                if len(batch) >= batch_size:
                    emit(batch, predictor.predict_batch([image for _, image in batch]))
                    batch = []
            if batch:
                emit(batch, predictor.predict_batch([image for _, image in batch]))
            if summary.frames == 0:
                raise InputError(f"no frame of {summary.video} could be decoded from frame {options.start} on")
            summary.outputs = outputs.close()
        except BaseException:
            written, kept = outputs.abort()
            if kept:
                reporter.warn(f"stopped: kept the {written} frame(s) written so far as "
                              + ", ".join(str(path) for path in kept))
            raise
        shortfall = reader.shortfall()
        if shortfall:
            warn(shortfall)
    summary.seconds = time.perf_counter() - started
    return summary
