"""Writing depth videos: H.264 and FFV1 through PyAV, MPEG-4 Part 2 through OpenCV, PNG frames last.

`CODECS` are the choices of `--codec`:

- `h264`: H.264 in MP4 (yuv420p, `H264_OPTIONS`), through the FFmpeg and libx264 that PyAV's wheels
  ship: what web browsers, notebooks, chat and review tools play. yuv420p needs even sizes, so an
  odd last row or column is repeated (the video is then one pixel larger than the source).
- `mp4v`: MPEG-4 Part 2 in MP4, through OpenCV's own FFmpeg: plays in desktop players, not in
  browsers. If it cannot be opened, MJPG in AVI is tried, then PNG frames in a folder.
- `ffv1`: FFV1 in Matroska, through PyAV: lossless. A grey depth video keeps its 8-bit levels
  exactly (stored as grey); a colour one (side-by-side) is stored as lossless RGB.

`resolve_codec` says once per run what can be written here: without PyAV or its libx264 encoder,
H.264 becomes mp4v with a one-line note; FFV1 has no stand-in and is refused. Writers are sinks
(`anydepth_cli.io.video.BackgroundSink`) that encode in their own thread into a hidden temp file
and publish it whole.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from anydepth_cli.errors import InputError, OutputError, UsageError
from anydepth_cli.io.video import BackgroundSink, ImageSequenceSink, remove_path, replace_path
from anydepth_cli.io.writers import temp_beside, write_color_png

CODECS: dict[str, str] = {"h264": ".mp4", "mp4v": ".mp4", "ffv1": ".mkv"}
"""Each `--codec` and the suffix of the videos it writes."""

OPENCV_CODECS: tuple[tuple[str, str], ...] = (("mp4v", ".mp4"), ("MJPG", ".avi"))
"""(FourCC, container suffix) pairs the OpenCV writer tries, in order."""

H264_OPTIONS: dict[str, str] = {
    "preset": "veryfast", "crf": "18",
    # swscale turns RGB into YUV with the BT.601 matrix; the tags say so, so that players agree.
    "colorspace": "smpte170m", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv",
}
"""libx264 settings: `veryfast` encodes about twice as fast as the default preset, and depth pictures are
smooth enough that CRF 18 (visually lossless) stays small."""

_PYAV: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "mp4", {"movflags": "+faststart"}),  # faststart: a browser plays before the end arrives
    "ffv1": ("ffv1", "matroska", {}),
}
"""PyAV's encoder, container format and container options for each codec it writes."""


def pyav_missing(codec: str) -> str | None:
    """Why PyAV cannot write `codec` here (it is not installed, or lacks the encoder), or None when it can."""
    encoder = _PYAV[codec][0]
    try:
        import av.codec
    except (ImportError, OSError):
        return "PyAV is not installed"
    try:
        av.codec.Codec(encoder, "w")
    except ValueError:  # UnknownCodecError
        return f"this PyAV has no {encoder} encoder"
    return None


def resolve_codec(codec: str) -> tuple[str, str | None]:
    """The codec a run asking for `codec` writes here, and a one-line note when that is another one.

    H.264 falls back to mp4v when PyAV or its libx264 encoder cannot be had; FFV1 is a UsageError then.
    """
    if codec not in CODECS:
        raise UsageError(f"unknown video codec {codec!r}; choose one of {', '.join(CODECS)}")
    missing = pyav_missing(codec) if codec in _PYAV else None
    if missing is None:
        return codec, None
    if codec == "h264":
        return "mp4v", (f"{missing}, so depth videos are MPEG-4 Part 2 (mp4v), not H.264: they play in desktop "
                        "players but not in web browsers (pip install av brings H.264)")
    raise UsageError(f"--codec {codec} needs PyAV with its {_PYAV[codec][0]} encoder, and {missing} (pip install av)")


def _check_frame(frame: np.ndarray, size: tuple[int, int]) -> None:
    if (frame.shape[1], frame.shape[0]) != size or frame.dtype != np.uint8:
        raise InputError(f"frame of {frame.shape[1]}x{frame.shape[0]} {frame.dtype} does not fit a "
                         f"{size[0]}x{size[1]} uint8 video (the frame size changed mid-video?)")


def _rate(fps: float) -> Fraction:
    """`fps` as a fraction with a small denominator (29.97... → 30000/1001)."""
    return max(Fraction(fps).limit_denominator(1001), Fraction(1, 1001))


class _PyAVSink(BackgroundSink):
    """RGB uint8 frames of `size` encoded by PyAV into a temp file, as `codec` (a key of `_PYAV`).

    With `grey`, frames are grey pictures (R = G = B) and their first channel is stored as grey."""

    def __init__(self, final: Path, codec: str, fps: float, size: tuple[int, int], grey: bool,
                 queue_size: int) -> None:
        try:
            import av
        except (ImportError, OSError) as exc:
            raise OutputError("PyAV is not installed (pip install av)") from exc
        encoder, container_format, container_options = _PYAV[codec]
        self._av, self._size, self._grey = av, size, grey
        self._pad = (size[1] % 2, size[0] % 2) if codec == "h264" else (0, 0)
        self._temp = temp_beside(final)
        try:
            self._container = av.open(str(self._temp), "w", format=container_format, options=container_options)
        except av.error.FFmpegError as exc:
            raise OutputError(f"cannot write {final}: {exc}") from exc
        try:
            stream = self._container.add_stream(encoder, rate=_rate(fps),
                                                options=H264_OPTIONS if codec == "h264" else {})
            stream.width, stream.height = size[0] + self._pad[1], size[1] + self._pad[0]
            stream.pix_fmt = "yuv420p" if codec == "h264" else "gray" if grey else "bgr0"
            stream.codec_context.open()
        except (av.error.FFmpegError, ValueError) as exc:
            with contextlib.suppress(av.error.FFmpegError):
                self._container.close()
            remove_path(self._temp)
            raise OutputError(f"cannot open the {encoder} encoder for {final}: {exc}") from exc
        self._stream = stream
        super().__init__(final, queue_size)

    def _handle(self, item: np.ndarray) -> None:
        _check_frame(item, self._size)
        picture = item[..., 0] if self._grey else item
        if any(self._pad):
            picture = np.pad(picture, ((0, self._pad[0]), (0, self._pad[1])) + ((0, 0),) * (picture.ndim - 2),
                             mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(picture),
                                                 format="gray" if self._grey else "rgb24")
        frame.pts = self.handled
        self._mux(self._stream.encode(frame))

    def _finish(self) -> None:
        self._mux(self._stream.encode(None))
        self._close()

    def _mux(self, packets: Iterable[Any]) -> None:
        try:
            for packet in packets:
                self._container.mux(packet)
        except self._av.error.FFmpegError as exc:
            if isinstance(exc, OSError):
                raise
            raise OutputError(f"cannot encode {self.final}: {exc}") from exc

    def _close(self) -> None:
        try:
            self._container.close()
        except self._av.error.FFmpegError as exc:
            raise OutputError(f"cannot finish {self.final}: {exc}") from exc

    def _publish(self, target: Path) -> None:
        replace_path(self._temp, target)

    def _discard(self) -> None:
        try:
            self._close()
        except OutputError:
            pass
        remove_path(self._temp)


class _OpenCVSink(BackgroundSink):
    """RGB frames encoded by an opened OpenCV writer into a temp video file."""

    def __init__(self, final: Path, temp: Path, writer: cv2.VideoWriter, size: tuple[int, int],
                 queue_size: int) -> None:
        self._temp, self._writer, self._size = temp, writer, size
        super().__init__(final, queue_size)

    def _handle(self, item: np.ndarray) -> None:
        _check_frame(item, self._size)
        self._writer.write(cv2.cvtColor(item, cv2.COLOR_RGB2BGR))

    def _finish(self) -> None:
        self._writer.release()

    def _publish(self, target: Path) -> None:
        replace_path(self._temp, target)

    def _discard(self) -> None:
        self._writer.release()
        remove_path(self._temp)


def open_video_writer(
    base: Path,
    fps: float,
    size: tuple[int, int],
    codec: str = "h264",
    queue_size: int = 8,
    grey: bool = False,
    opencv_codecs: Sequence[tuple[str, str]] = OPENCV_CODECS,
) -> tuple[BackgroundSink, str | None]:
    """A sink encoding RGB uint8 frames of `size` (width, height) at `fps` into `base` + suffix, as `codec`.

    `grey` frames (R = G = B) are stored as grey where the codec can (FFV1). H.264 that cannot be
    opened, and mp4v, go through OpenCV's `opencv_codecs`, the first that opens
    (`clip_depth` → `clip_depth.mp4`); if none does, frames are saved as PNGs in the folder
    `base` + `_frames`. The second value is a note for the user when `codec` was not used (None
    otherwise). FFV1 that cannot be opened is an OutputError.
    """
    base = Path(base)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {base.parent}: {exc.strerror or exc}") from exc
    tried = []
    if codec in _PYAV:
        try:
            return _PyAVSink(base.with_name(base.name + CODECS[codec]), codec, fps, size, grey, queue_size), None
        except OutputError as exc:
            if codec != "h264":
                raise
            tried.append(f"H.264 ({exc})")
    for fourcc, suffix in opencv_codecs:
        final = base.with_name(base.name + suffix)
        temp = temp_beside(final)
        writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
        if writer.isOpened():
            note = f"{', '.join(tried)} could not be opened; writing {fourcc} to {final} instead" if tried else None
            return _OpenCVSink(final, temp, writer, size, queue_size), note
        writer.release()
        remove_path(temp)
        tried.append(fourcc)
    folder = base.with_name(base.name + "_frames")
    note = (f"no video codec could be opened (tried {', '.join(tried) or 'none'}); "
            f"writing PNG frames to {folder} instead")
    return ImageSequenceSink(folder, write_color_png, queue_size), note
