"""The model behind the server: opened and warmed in the background, then fed requests through one streaming engine
with dynamic batching."""

from __future__ import annotations

import threading
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from anydepth_cli.errors import AnyDepthError, InputError
from anydepth_cli.inference.engine import Engine, Loaded, Prediction
from anydepth_cli.io.images import decode_image

if TYPE_CHECKING:
    from anydepth_cli.inference.predictor import BatchedPredictor
    from anydepth_cli.serve.encode import Body

Encoder = Callable[[np.ndarray, np.ndarray], "Body"]
"""From the decoded photo and its map to a response body."""


@dataclass(frozen=True)
class Batching:
    """The engine's dynamic batching: at most `max_batch` images a batch, the first waiting at most `max_wait`
    seconds for the others; at most `queue` requests in flight."""

    max_batch: int = 4
    max_wait: float = 0.01
    queue: int = 64


@dataclass
class Job:
    """One request in the engine: its body until decoded, how to encode its answer, and whether its client left."""

    data: bytes
    encode: Encoder
    tile: bool = True
    abandoned: threading.Event = field(default_factory=threading.Event)


class CountingPredictor:
    """A predictor that reports the size of every batch it is given (for the batch-size histogram)."""

    def __init__(self, predictor: BatchedPredictor, observe: Callable[[int], None]) -> None:
        self._predictor = predictor
        self._observe = observe

    def predict_batch(self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None,
                      **options: object) -> list[np.ndarray]:
        self._observe(len(images))
        return self._predictor.predict_batch(images, sizes, **options)

    def __getattr__(self, name: str) -> object:
        return getattr(self._predictor, name)


class ServedModel:
    """A predictor opened by `opener` in a background thread (`start`), warmed with one request, then running
    requests (`submit`) until `close`."""

    def __init__(self, opener: Callable[[], tuple[BatchedPredictor, str]], batching: Batching, max_pixels: int,
                 observe_batch: Callable[[int], None]) -> None:
        self.opener = opener
        self.batching = batching
        self.max_pixels = max_pixels
        self.observe_batch = observe_batch
        self.ready = threading.Event()
        self.error: AnyDepthError | None = None
        self.label = ""
        self.predictor: BatchedPredictor | None = None
        self.engine: Engine | None = None
        self._whole: dict[int, weakref.ref] = {}
        """The images of `tile=off` requests (by id), which run in one pass whatever their size."""

    def start(self, on_failure: Callable[[], None]) -> None:
        """Open and warm the model in a background thread; `on_failure` is called if that fails."""
        threading.Thread(target=self._load, args=(on_failure,), name="anydepth-load", daemon=True).start()

    def _load(self, on_failure: Callable[[], None]) -> None:
        from anydepth_cli.pipelines.photos import TilingOptions
        from anydepth_cli.pipelines.runtime import tile_config

        try:
            predictor, self.label = self.opener()
            auto = TilingOptions("auto", tile_config(predictor)).policy(predictor.input_size)
            engine = Engine(CountingPredictor(predictor, self.observe_batch), self.batching.max_batch,
                            tiling=lambda image: None if self._untiled(image) else auto(image), capacity=self.batching.queue, max_wait=self.batching.max_wait)
            engine.start()
            size = predictor.input_size
            engine.submit(None, lambda _: Loaded(np.full((size, size, 3), 128, np.uint8)),
                          lambda *_: None).result()
        except AnyDepthError as exc:
            self.error = exc
            on_failure()
            return
        self.predictor, self.engine = predictor, engine
        self.ready.set()

    def submit(self, job: Job) -> Future:
        """Queue a request (raises the engine's `Full` at capacity); the future gives its Body."""
        assert self.engine is not None
        return self.engine.submit(job, self._decode, _finish, block=False)

    def _decode(self, job: Job) -> Loaded:
        if job.abandoned.is_set():
            raise InputError("the client left")
        data, job.data = job.data, b""
        image = decode_image(data, self.max_pixels)
        if not job.tile:
            key = id(image)
            self._whole[key] = weakref.ref(image, lambda _: self._whole.pop(key, None))
        return Loaded(image)

    def _untiled(self, image: np.ndarray) -> bool:
        """Whether `image` came from a `tile=off` request."""
        ref = self._whole.get(id(image))
        return ref is not None and ref() is image

    @property
    def in_flight(self) -> int:
        return self.engine.in_flight if self.engine is not None else 0

    def close(self) -> None:
        """Finish the requests under way and stop the engine."""
        if self.engine is not None:
            self.engine.close()


def _finish(job: Job, loaded: Loaded, prediction: Prediction) -> Body | None:
    if job.abandoned.is_set():
        return None
    return job.encode(loaded.image, prediction.values)
