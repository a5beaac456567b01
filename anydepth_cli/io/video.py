"""Video files: probing, decoding selected frames ahead in a thread, and writing outputs in threads.

Writers publish atomically. Each writer fills a hidden temp file or folder in the output folder
(`.NAME.tmp-XXXXXXXX.mp4`, see `anydepth_cli.io.writers.temp_beside`) and renames it to its final
name only when closed cleanly. When a run stops early (Ctrl+C or an error) a writer is aborted
instead: what it has written so far is finalised (a video writer is closed, so the file is a
playable video) and published under a clearly partial name, `NAME.partial.mp4` (`NAME.partial`
for a folder); if nothing was written, the temp output is deleted. A file under the final name is
therefore always complete; a clean run removes a stale partial output of an earlier run. The
encoders behind the video writers are in `anydepth_cli.io.encoders`.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import threading
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from anydepth_cli.errors import AnyDepthError, InputError, OutputError, UsageError
from anydepth_cli.io.writers import atomic_write, temp_beside

VIDEO_EXTENSIONS: frozenset[str] = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
    ".ts", ".mts", ".m2ts", ".3gp", ".ogv",
})  # fmt: skip
"""Lower-case suffixes of the inputs treated as videos."""

DEFAULT_FPS = 30.0
"""Frame rate assumed for a video whose header gives none."""

FRAME_NAME = "{:06d}.png"
"""File names of the frames in a PNG sequence folder, numbered from 0 (`ImageSequenceSink`'s default)."""

_DONE = object()


def is_video(path: Path) -> bool:
    """Whether `path` names a video file (by its suffix)."""
    path = Path(path)
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.is_dir()


def partial_name(path: Path) -> Path:
    """Where an aborted output is kept: `clip_depth.mp4` → `clip_depth.partial.mp4`."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: frame rate, frame size, and frame count (None if unknown)."""

    fps: float
    width: int
    height: int
    frame_count: int | None


def _open_capture(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """An opened capture of `path` and its header; InputError if it cannot be opened as a video."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such video file: {path}")
    capture = cv2.VideoCapture(str(path))
    # Frames come upright as a player shows them (phone videos store a rotation in their
    # metadata), and the width and height below are those of the upright frames.
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) if capture.isOpened() else 0
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) if capture.isOpened() else 0
    if width <= 0 or height <= 0:
        capture.release()
        raise InputError(
            f"cannot read video {path}: not a video OpenCV can decode (empty or without frames, corrupt, "
            "truncated before its index, or an unsupported codec)"
        )
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    info = VideoInfo(
        fps=fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS,
        width=width,
        height=height,
        frame_count=count if count > 0 else None,
    )
    return capture, info


def probe_video(path: Path, start: int = 0) -> VideoInfo:
    """Frame rate, size and frame count of a video; InputError if it cannot be read as one, UsageError if
    frame `start` is past its end."""
    capture, info = _open_capture(path)
    capture.release()
    _check_start(path, info, start)
    return info


def check_selection(start: int, max_frames: int | None, stride: int) -> None:
    """UsageError unless `start`, `max_frames` and `stride` select frames from some video."""
    if start < 0:
        raise UsageError(f"--start must be 0 or more, got {start}")
    if stride < 1:
        raise UsageError(f"--stride must be at least 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {max_frames}")


def _check_start(path: Path, info: VideoInfo, start: int) -> None:
    if info.frame_count is not None and start >= info.frame_count:
        raise UsageError(f"--start {start} is past the end of {Path(path).name} ({info.frame_count} frames)")


def selected_count(frame_count: int | None, start: int, max_frames: int | None, stride: int) -> int | None:
    """How many frames `start`, `max_frames` and `stride` select from `frame_count` (None if unknown)."""
    if frame_count is None:
        return max_frames
    available = max(0, -(-(frame_count - start) // stride))
    return available if max_frames is None else min(available, max_frames)


class FrameReader:
    """Selected frames of a video as (frame index, RGB uint8 H×W×3), decoded as they are iterated (the streaming
    engine iterates it in its feeder thread, ahead of the network).

    Frames `start`, `start + stride`, ... are read, at most `max_frames` of them. Decoding stops at the first frame
    that fails to decode; `shortfall()` then says how many frames were decoded out of those the header announces.
    Opening raises InputError for an unreadable file and UsageError for bad selections. Use as a context manager, or
    call `close()`, to release the file.
    """

    def __init__(self, path: Path, start: int = 0, max_frames: int | None = None, stride: int = 1) -> None:
        check_selection(start, max_frames, stride)
        self.path = Path(path)
        self._capture, self.info = _open_capture(self.path)
        try:
            _check_start(self.path, self.info, start)
        except UsageError:
            self._capture.release()
            raise
        self.start, self.max_frames, self.stride = start, max_frames, stride
        self.expected = selected_count(self.info.frame_count, start, max_frames, stride)
        """Frames the selection should give according to the header (None if unknown)."""
        self.decoded = 0
        self._finished = False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        capture = self._capture
        if self.start and not capture.set(cv2.CAP_PROP_POS_FRAMES, self.start):
            for _ in range(self.start):
                if not capture.grab():
                    break
        index = self.start
        while self.max_frames is None or self.decoded < self.max_frames:
            if index > self.start and not all(capture.grab() for _ in range(self.stride - 1)):
                break
            ok, frame = capture.read()
            if not ok:
                break
            self.decoded += 1
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += self.stride
        self._finished = True

    def shortfall(self) -> str | None:
        """A warning when decoding ended before every announced frame was read, else None."""
        if not self._finished or self.expected is None or self.decoded >= self.expected:
            return None
        return (f"{self.path.name}: decoded {self.decoded} of the {self.expected} frames its header "
                f"announces; the file may be truncated or corrupt, so only those {self.decoded} were processed")

    def close(self) -> None:
        """Release the file."""
        self._capture.release()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_path(path: Path) -> None:
    """Delete a file or folder, if it can be."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def replace_path(source: Path, target: Path) -> None:
    """Rename `source` onto `target`, replacing a folder or file already there."""
    try:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(source, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc


class BackgroundWorker(ABC):
    """Items handled one at a time, in order, by a background thread fed through a bounded queue.

    `put` queues an item, waiting while `queue_size` items wait. An error raised in the thread
    stops the handling (later items are drained unhandled, so producers never block) and is
    raised again, an OSError as OutputError, by the next `put` or by `join`.
    """

    def __init__(self, label: str, queue_size: int = 8) -> None:
        self.label = label
        self.handled = 0
        """Items handled so far."""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"anydepth-{label}", daemon=True)
        self._thread.start()

    @abstractmethod
    def _handle(self, item: Any) -> None:
        """Handle one item (in the thread)."""

    def put(self, item: Any) -> None:
        """Queue one item."""
        self._raise_error()
        self._queue.put(item)

    def stop(self) -> None:
        """Let the thread handle the queued items, and end it."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(_DONE)
            self._thread.join()

    def join(self) -> None:
        """`stop`, then raise the thread's error if there was one."""
        self.stop()
        self._raise_error()

    def _raise_error(self) -> None:
        if isinstance(self._error, OSError):
            raise OutputError(f"cannot write {self.label}: {self._error.strerror or self._error}") from self._error
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self._error is not None:
                continue
            try:
                self._handle(item)
                self.handled += 1
            except BaseException as exc:
                self._error = exc


class BackgroundSink(BackgroundWorker):
    """An output file or folder written item by item by a `BackgroundWorker`.

    `close()` writes the queued items and publishes the output under `final`; `abort()` writes
    them and keeps what was written under `partial_name(final)` (see the module docstring).
    """

    def __init__(self, final: Path, queue_size: int = 8) -> None:
        self.final = Path(final)
        self._settled = False
        super().__init__(str(self.final), queue_size)

    @abstractmethod
    def _finish(self) -> None:
        """Complete the temp output after the last item (in the caller's thread)."""

    @abstractmethod
    def _publish(self, target: Path) -> None:
        """Move the completed temp output to `target`."""

    @abstractmethod
    def _discard(self) -> None:
        """Delete the temp output."""

    def close(self) -> Path:
        """Write the queued items and publish the output under its final name."""
        self._settled = True
        try:
            self.join()
            self._finish()
            self._publish(self.final)
        except BaseException:
            self._discard()
            raise
        remove_path(partial_name(self.final))
        return self.final

    def abort(self) -> Path | None:
        """Write the queued items and keep the output under its partial name; returns that name,
        or None when nothing was kept (nothing written, finalising failed, or already closed)."""
        if self._settled:
            return None
        self._settled = True
        self.stop()
        try:
            self._finish()
            if self.handled and self._error is None:
                target = partial_name(self.final)
                self._publish(target)
                return target
        except (OSError, AnyDepthError):
            pass
        self._discard()
        return None


class ImageSequenceSink(BackgroundSink):
    """Frames saved as numbered files in a folder, by `save(path, frame)`; `name` gives each file's name
    from the frame's number (`FRAME_NAME` by default).

    Items are frames numbered by their position in the sequence from 0, or with `indexed`,
    (number, frame) pairs numbered by the caller. The folder is filled as the frames come, so
    memory holds no more than the queued frames.
    """

    def __init__(self, final: Path, save: Callable[[Path, Any], None], queue_size: int = 8,
                 indexed: bool = False, name: Callable[[int], str] = FRAME_NAME.format) -> None:
        final = Path(final)
        self._temp = temp_beside(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._temp.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create a folder in {final.parent}: {exc.strerror or exc}") from exc
        self._save = save
        self._indexed = indexed
        self._name = name
        super().__init__(final, queue_size)

    def _handle(self, item: Any) -> None:
        number, frame = item if self._indexed else (self.handled, item)
        self._save(self._temp / self._name(number), frame)

    def _finish(self) -> None:
        pass

    def _publish(self, target: Path) -> None:
        replace_path(self._temp, target)

    def _discard(self) -> None:
        remove_path(self._temp)


class NpzFramesSink(BackgroundSink):
    """Equal-sized 2-D frames stacked into one .npz: `arrays_name` (N×H×W, `dtype`), `frame_index`
    (N, int64: the index each item was given) and the scalars of `metadata`.

    Items are (frame index, H×W array). Frames are spooled to a hidden temp file as they come,
    so memory stays bounded; the archive (uncompressed, like `np.savez`) is assembled and
    written atomically when the sink is closed or aborted.
    """

    def __init__(self, final: Path, metadata: dict[str, object] | None = None, arrays_name: str = "disparity",
                 dtype: np.dtype | str = np.float16, queue_size: int = 8) -> None:
        final = Path(final)
        self._dtype = np.dtype(dtype).newbyteorder("<")
        self._metadata = dict(metadata or {})
        self._name = arrays_name
        self._indices: list[int] = []
        self._shape: tuple[int, int] | None = None
        self._spool_path = temp_beside(final.with_suffix(".spool"))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._spool = open(self._spool_path, "wb")
        except OSError as exc:
            raise OutputError(f"cannot write in {final.parent}: {exc.strerror or exc}") from exc
        super().__init__(final, queue_size)

    def _handle(self, item: tuple[int, np.ndarray]) -> None:
        index, frame = item
        if frame.ndim != 2 or (self._shape is not None and frame.shape != self._shape):
            raise ValueError(f"frame of shape {frame.shape} does not match {self._shape}")
        self._shape = frame.shape
        self._spool.write(np.ascontiguousarray(frame, dtype=self._dtype).tobytes())
        self._indices.append(int(index))

    def _finish(self) -> None:
        self._spool.close()

    def _publish(self, target: Path) -> None:
        try:
            atomic_write(target, self._assemble)
        finally:
            self._discard()

    def _discard(self) -> None:
        self._spool.close()
        remove_path(self._spool_path)

    def _assemble(self, temp: Path) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self._dtype),
            "fortran_order": False,
            "shape": (len(self._indices), *(self._shape or (0, 0))),
        }
        with zipfile.ZipFile(temp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open(f"{self._name}.npy", "w", force_zip64=True) as member, \
                    open(self._spool_path, "rb") as spool:
                np.lib.format.write_array_header_1_0(member, header)
                shutil.copyfileobj(spool, member, 1 << 20)
            extras = {"frame_index": np.asarray(self._indices, dtype=np.int64),
                      **{key: np.asarray(value) for key, value in self._metadata.items()}}
            for key, value in extras.items():
                with archive.open(f"{key}.npy", "w") as member:
                    np.save(member, value)
