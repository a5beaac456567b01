"""The engine's jobs in transit (`inference.engine`): a submitted job's entry and the settling of its future, and
the thread that submits a stream's jobs in order."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, TypeVar

from anydepth_cli.errors import AnyDepthError

J = TypeVar("J")
T = TypeVar("T")


@dataclass
class Entry:
    """A submitted job on its way through the stages."""

    job: object
    read: Future
    finish: Callable[[Any, Any], object]
    """Of the job's `Loaded` input and its `Prediction`."""
    result: Future


def read_job(load: Callable[[J], T], job: J) -> T | AnyDepthError:
    """`load(job)`, or the AnyDepthError that failed it."""
    try:
        return load(job)
    except AnyDepthError as exc:
        return exc


def settle(result: Future, finished: Future) -> None:
    """Give `result` what `finished` (the job's write) came to: its result, or its failure or cancellation."""
    if finished.cancelled():
        fail(result, CancelledError())
    elif finished.exception() is not None:
        fail(result, finished.exception())
    elif not result.done():
        result.set_result(finished.result())


def fail(result: Future, error: BaseException) -> None:
    """Fail `result` with `error`, unless it is settled already."""
    if not result.done():
        result.set_exception(error)


class Submitter(Protocol):
    """What a `Feeder` feeds: the engine."""

    capacity: int

    def submit(self, job: Any, load: Callable, finish: Callable) -> Future: ...

    def flush(self) -> None: ...


class Feeder:
    """`stream`'s thread: submits the jobs of an iterable in order, at most the engine's capacity ahead of the
    caller, and flushes the last batch when the iterable ends."""

    def __init__(self, engine: Submitter, jobs: Iterable, load: Callable, finish: Callable) -> None:
        self.engine, self.jobs, self.load, self.finish = engine, jobs, load, finish
        self.pending: deque[tuple[object, Future]] = deque()
        self.ready = threading.Condition()
        self.done = False
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self.slots = threading.Semaphore(engine.capacity)
        self.thread = threading.Thread(target=self._feed, name="anydepth-feed", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.slots.release()
        self.thread.join()

    def next_submitted(self) -> tuple[object, Future] | None:
        """The oldest submitted job and its future, waiting for one; None when every job has been taken."""
        with self.ready:
            self.ready.wait_for(lambda: self.pending or self.done)
            if not self.pending:
                return None
            head = self.pending.popleft()
        self.slots.release()
        return head

    def _feed(self) -> None:
        try:
            for job in self.jobs:
                self.slots.acquire()
                if self.stopped.is_set():
                    return
                future = self.engine.submit(job, self.load, self.finish)
                with self.ready:
                    self.pending.append((job, future))
                    self.ready.notify_all()
        except BaseException as exc:  # the iterable failed (e.g. a video decoder): the caller re-raises it
            if not self.stopped.is_set():
                self.error = exc
        finally:
            self.engine.flush()
            with self.ready:
                self.done = True
                self.ready.notify_all()
