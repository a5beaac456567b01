"""The streaming engine every path runs through: read ahead → the network on its device → write behind.

    engine = Engine(predictor, batch_size=8)
    for outcome in engine.stream(items, load, finish):   # outcomes in input order
        ...

Three stages linked by bounded queues, so the device never waits for the disk and the disk never waits for the
device:

- **read**: `load(job)` in `readers` worker threads (decoding a photo, a ground truth, a request body), returning
  the `Loaded` image and the size its map is wanted at;
- **device**: one thread takes the loaded images in submission order, gathers up to `batch_size` of them (or
  `batch_pixels`), waiting at most `max_wait` seconds from the first (`None`: until the batch is full or the input
  ends, or the engine is at capacity), and runs them through
  the predictor, which groups equal network sizes, fits batches in memory and halves a batch that runs out of it.
  An image the `tiling` policy picks is run by tiles instead (`predict_tiled`), on the same thread;
- **write**: `finish(job, loaded, prediction)` in `writers` worker threads (colouring, encoding, scoring, writing).

`submit` returns a future per job; `stream` feeds an iterable and yields `Outcome`s in input order. At most
`capacity` jobs are in flight (submitted and not yet done), fewer for large images (`pixel_budget`, at least two),
so memory stays bounded whatever the number of inputs. An `AnyDepthError` of one job (unreadable, too big, out of memory alone)
fails that job only; any other exception is a bug and is raised to the caller. Closing the engine (also when the
caller is interrupted) cancels what has not started and waits only for the work under way.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from anydepth_cli.errors import AnyDepthError, InputError
from anydepth_cli.inference.engine_jobs import Entry, Feeder, fail, read_job, settle

if TYPE_CHECKING:
    from anydepth_cli.inference.predictor import MapPredictor
    from anydepth_cli.inference.tiling import TileConfig

J = TypeVar("J")
R = TypeVar("R")

WORKERS = min(8, max(2, (os.cpu_count() or 2) // 2))
"""Reading threads, and writing threads, by default: decoding, colouring and encoding release the GIL, and on a GPU
machine they, not the network, set the pace."""
DEFAULT_PIXEL_BUDGET = 64_000_000
"""Pixels of decoded images the engine lets wait at once (e.g. 200 photos of 640×480, or 2 of 24 MP)."""


class Full(Exception):
    """`submit(block=False)` found the engine at capacity."""


@dataclass(frozen=True)
class Loaded:
    """One input as read: an RGB image (H×W×3, uint8 or float32 in [0, 1]), the size (height, width) its map is
    wanted at (None: the image's own), and whatever else was read with it for `finish` (a ground truth, ...)."""

    image: np.ndarray
    size: tuple[int, int] | None = None
    data: Any = None

    @property
    def pixels(self) -> int:
        return self.image.shape[0] * self.image.shape[1]


@dataclass(frozen=True)
class Prediction:
    """The model's quantity (float32 H×W, at the wanted size) for one input; from tiled runs the per-pixel confidence
    (when asked for) and the number of tiles (0: one whole pass); and the `extras` made on the device."""

    values: np.ndarray
    confidence: np.ndarray | None = None
    tiles: int = 0
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    """What the engine's `on_device` made of the map on the device (e.g. its colour picture)."""


@dataclass(frozen=True)
class Outcome(Generic[J, R]):
    """What became of one job: `finish`'s result, or the error that failed it."""

    job: J
    result: R | None = None
    error: AnyDepthError | None = None


DeviceWork = Callable[[Any], "dict[str, np.ndarray]"]
"""Work on a map while it is on a GPU (a torch tensor, H×W), giving arrays for `finish` (`Prediction.extras`); run
only when the predictor is on CUDA."""
TilePolicy = Callable[[np.ndarray], "TileConfig | None"]
"""For an image, the tile geometry to run it by tiles with, or None for one whole pass."""
TileProgress = Callable[[object, int, int], None]
"""Called with (job, tiles done, tiles in all) while a job runs by tiles."""


_END, _FLUSH, _WAITED = object(), object(), object()
_POLL = 0.05
"""Seconds between the device thread's checks, while it gathers a batch, that more jobs can still come."""


class Engine:
    """Read-ahead workers, one device thread and write-behind workers around a predictor (see the module docstring).

    Start it with `with Engine(...) as engine:` or use `stream`, which opens and closes it.
    """

    def __init__(self, predictor: MapPredictor, batch_size: int = 1, *, tiling: TilePolicy | None = None,
                 confidence: bool = False, tile_progress: TileProgress | None = None, readers: int = WORKERS,
                 writers: int = WORKERS, capacity: int | None = None, pixel_budget: int = DEFAULT_PIXEL_BUDGET,
                 batch_pixels: int | None = None, max_wait: float | None = None,
                 on_device: DeviceWork | None = None) -> None:
        if batch_size < 1 or readers < 1 or writers < 1:
            raise ValueError("batch_size, readers and writers must be at least 1")
        self.predictor = predictor
        self.batch_size = batch_size
        self.tiling = tiling
        self.confidence = confidence
        self.tile_progress = tile_progress
        self.readers, self.writers = readers, writers
        self.capacity = max(capacity or 4 * batch_size + 2 * readers, batch_size + 1)
        self.pixel_budget = pixel_budget
        self.batch_pixels = batch_pixels
        self.max_wait = max_wait
        on_gpu = getattr(predictor, "device_hooks", False) and predictor.device.type == "cuda"
        self.on_device = on_device if on_gpu else None
        self._lock = threading.Condition()
        self._in_flight = 0
        self._limit = min(self.capacity, max(2, readers))  # until the first image says how large they are
        self._closed = threading.Event()
        self._shut = False
        self._entries: queue.Queue = queue.Queue()
        self._read_pool: ThreadPoolExecutor | None = None
        self._write_pool: ThreadPoolExecutor | None = None
        self._device: threading.Thread | None = None
        self._failure: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close(cancel=exc_info[0] is not None)

    def start(self) -> None:
        """Start the worker threads (`submit` and `stream` do it when needed)."""
        if self._device is not None:
            return
        self._read_pool = ThreadPoolExecutor(self.readers, thread_name_prefix="anydepth-read")
        self._write_pool = ThreadPoolExecutor(self.writers, thread_name_prefix="anydepth-write")
        self._device = threading.Thread(target=self._device_loop, name="anydepth-device", daemon=True)
        self._device.start()

    def close(self, cancel: bool = False) -> None:
        """Finish every submitted job (or, with `cancel`, fail those not yet under way) and stop the threads."""
        if self._device is None or self._shut:
            return
        self._shut = True
        if cancel:
            self._cancel()
        self._entries.put(_END)
        self._device.join()
        self._cancel()
        assert self._read_pool is not None and self._write_pool is not None
        self._read_pool.shutdown(wait=True, cancel_futures=True)
        self._write_pool.shutdown(wait=True, cancel_futures=cancel)

    def _cancel(self) -> None:
        """Refuse new jobs and wake whoever waits for capacity; the device thread fails what is still queued."""
        self._closed.set()
        with self._lock:
            self._lock.notify_all()

    # -- submitting ------------------------------------------------------------------------------------------------

    def submit(self, job: J, load: Callable[[J], Loaded], finish: Callable[[J, Loaded, Prediction], R],
               block: bool = True, timeout: float | None = None) -> Future:
        """Queue one job; its future gives `finish`'s result or raises what failed it.

        Waits while the engine is at capacity; with `block=False`, or past `timeout`, raises `Full` instead.
        """
        self.start()
        with self._lock:
            if not self._lock.wait_for(lambda: self._in_flight < self._limit or self._closed.is_set(),
                                       timeout=timeout if block else 0):
                raise Full(f"{self._in_flight} jobs in flight")
            if self._closed.is_set():
                raise RuntimeError("the engine is closed")
            self._in_flight += 1
        if self._failure is not None:
            raise self._failure
        assert self._read_pool is not None
        result: Future = Future()
        result.add_done_callback(self._release)
        entry = Entry(job, self._read_pool.submit(read_job, load, job),
                      lambda loaded, prediction: finish(job, loaded, prediction), result)
        entry.read.add_done_callback(self._note_pixels)
        self._entries.put(entry)
        return result

    def flush(self) -> None:
        """Run the batch gathered so far without waiting for it to fill (the input has ended, for now)."""
        self._entries.put(_FLUSH)

    def stream(self, jobs: Iterable[J], load: Callable[[J], Loaded],
               finish: Callable[[J, Loaded, Prediction], R]) -> Iterator[Outcome[J, R]]:
        """Run every job and yield its outcome in input order; the engine is closed when the iteration ends, and its
        pending work cancelled when the caller stops early (an exception, Ctrl+C, `close()` of the generator).
        An exception raised by `jobs` itself is raised after the outcomes of the jobs it gave."""
        self.start()
        feeder = Feeder(self, jobs, load, finish)
        completed = False
        try:
            while (head := feeder.next_submitted()) is not None:
                yield _outcome(*head)
            completed = True
        finally:
            if not completed:
                self._cancel()
            feeder.stop()
            self.close(cancel=not completed)
        if feeder.error is not None:
            raise feeder.error

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet done."""
        return self._in_flight

    # -- the device thread -----------------------------------------------------------------------------------------

    def _release(self, _: Future) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    def _note_pixels(self, read: Future) -> None:
        """Fewer jobs in flight for large images: as many as `pixel_budget` holds of the last one read, and at
        least two, so that reading the next overlaps the work on one."""
        if read.cancelled() or read.exception() is not None or not isinstance(read.result(), Loaded):
            return
        pixels = max(1, read.result().pixels)
        with self._lock:
            self._limit = max(2, min(self.capacity, self.pixel_budget // pixels))
            self._lock.notify_all()

    def _device_loop(self) -> None:
        window: list[tuple[Entry, Loaded]] = []
        deadline: float | None = None
        try:
            while (entry := self._next_entry(len(window), deadline)) is not _END:
                if not isinstance(entry, Entry):  # a flush, or the wait for more ran out
                    self._run_window(window)
                    window = []
                    continue
                loaded = self._loaded(entry)
                if loaded is None:
                    continue
                tiles = self.tiling(loaded.image) if self.tiling is not None else None
                if tiles is not None:
                    self._run_tiled(entry, loaded, tiles)
                    continue
                window.append((entry, loaded))
                if len(window) == 1 and self.max_wait is not None:
                    deadline = time.monotonic() + self.max_wait
                if self._full(window):
                    self._run_window(window)
                    window = []
            self._run_window(window)
        except BaseException as exc:  # a bug: fail every job, pending or still to come, so the caller sees it
            self._failure = exc
            for entry, _ in window:
                fail(entry.result, exc)
            while (entry := self._entries.get()) is not _END:
                if isinstance(entry, Entry):
                    entry.read.cancel()
                    fail(entry.result, exc)

    def _full(self, window: Sequence[tuple[Entry, Loaded]]) -> bool:
        """Whether a gathered batch is to run: `batch_size` images, or `batch_pixels` of them."""
        if len(window) >= self.batch_size:
            return True
        return self.batch_pixels is not None and sum(loaded.pixels for _, loaded in window) >= self.batch_pixels

    def _next_entry(self, gathered: int, deadline: float | None) -> object:
        """The next submitted entry, `_FLUSH`, or `_WAITED` when the `gathered` batch is to run without waiting for
        more: its wait ran out, or every job in flight is in it and no more can be submitted; `_END` at the end
        (after failing what is still queued when the engine was cancelled)."""
        while True:
            if self._closed.is_set():
                self._drain(CancelledError())
                return _END
            timeout = None if not gathered else _POLL
            if gathered and deadline is not None:
                timeout = min(_POLL, max(0.0, deadline - time.monotonic()))
            try:
                return self._entries.get(timeout=timeout)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return _WAITED
                with self._lock:
                    if self._in_flight >= self._limit and self._in_flight <= gathered:
                        return _WAITED

    def _drain(self, error: BaseException) -> None:
        """Fail every entry still queued (closing, or after a bug)."""
        while True:
            try:
                entry = self._entries.get_nowait()
            except queue.Empty:
                return
            if isinstance(entry, Entry):
                entry.read.cancel()
                fail(entry.result, error)

    def _loaded(self, entry: Entry) -> Loaded | None:
        """The entry's read input; None (and the entry failed) when reading failed or was cancelled."""
        try:
            loaded = entry.read.result()
        except CancelledError as exc:
            fail(entry.result, exc)
            return None
        except BaseException as exc:  # a bug in `load`: fail this job with it, then the rest (`_device_loop`)
            fail(entry.result, exc)
            raise
        if isinstance(loaded, AnyDepthError):
            fail(entry.result, loaded)
            return None
        return loaded

    def _run_window(self, window: Sequence[tuple[Entry, Loaded]]) -> None:
        """Predict a gathered batch and hand each map to the writers; an image that does not fit in memory even
        alone fails alone."""
        if not window:
            return
        try:
            images = [loaded.image for _, loaded in window]
            extras: list[dict[str, np.ndarray]] = [{} for _ in window]
            if self.on_device is not None:
                work = self.on_device
                maps = self.predictor.predict_batch(images, [loaded.size or loaded.image.shape[:2]
                                                             for _, loaded in window],
                                                    on_device=lambda i, values: extras[i].update(work(values)))
            elif any(loaded.size is not None for _, loaded in window):
                maps = self.predictor.predict_batch(images, [loaded.size or loaded.image.shape[:2]
                                                             for _, loaded in window])
            else:
                maps = self.predictor.predict_batch(images)
        except InputError as exc:
            if len(window) == 1:
                fail(window[0][0].result, exc)
                return
            for single in window:
                self._run_window([single])
            return
        for (entry, loaded), values, made in zip(window, maps, extras):
            self._write(entry, loaded, Prediction(values, extras=made))

    def _run_tiled(self, entry: Entry, loaded: Loaded, config: TileConfig) -> None:
        from anydepth_cli.inference.tiling import predict_tiled

        progress = None
        if self.tile_progress is not None:
            report, job = self.tile_progress, entry.job
            progress = lambda done, total: report(job, done, total)  # noqa: E731
        try:
            result = predict_tiled(loaded.image, self.predictor, config, progress, confidence=self.confidence)
        except InputError as exc:
            fail(entry.result, exc)
            return
        self._write(entry, loaded, Prediction(result.values, result.confidence, result.tiles))

    def _write(self, entry: Entry, loaded: Loaded, prediction: Prediction) -> None:
        assert self._write_pool is not None
        try:
            done = self._write_pool.submit(entry.finish, loaded, prediction)
        except RuntimeError as exc:  # the pool is shut down: the run is being cancelled
            fail(entry.result, CancelledError(str(exc)))
            return
        done.add_done_callback(lambda finished: settle(entry.result, finished))


def _outcome(job: J, future: Future) -> Outcome:
    """The job's outcome from its future: its result, or the AnyDepthError that failed it; anything else is raised."""
    try:
        return Outcome(job, future.result())
    except AnyDepthError as exc:
        return Outcome(job, error=exc)
