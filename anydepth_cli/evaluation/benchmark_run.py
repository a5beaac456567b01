"""One standard set through every model: samples read ahead in threads, predicted in batches (or tiles),
scored in background threads, so that reading, inference and scoring overlap.

Memory stays bounded whatever the set: photos are read ahead only up to `READ_AHEAD_PIXELS`, a network call
takes at most `BATCH_PIXELS` of full-resolution photos (one ETH3D image alone), and at most
`SCORE_AHEAD_PIXELS` of predictions wait to be scored.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from anydepth_cli.datasets.archive import Sample, SetFiles
from anydepth_cli.datasets.files import decode_rgb
from anydepth_cli.errors import InputError
from anydepth_cli.evaluation.protocols import PROTOCOLS, Protocol
from anydepth_cli.io.writers import write_npy

if TYPE_CHECKING:  # both import torch, which reading and scoring do not need
    from anydepth_cli.inference.predictor import MapPredictor
    from anydepth_cli.inference.tiling import TileConfig

READ_AHEAD_PIXELS = 48_000_000
BATCH_PIXELS = 8_000_000
SCORE_AHEAD_PIXELS = 48_000_000
WORKERS = max(2, min(4, (os.cpu_count() or 2) // 2))
"""Threads reading samples, and threads scoring them (numpy releases the GIL for the heavy work)."""
TILE_MODES = ("off", "on", "auto")


@dataclass(frozen=True)
class Loaded:
    """A sample as scored: its photo (cropped where the protocol says), ground truth and valid pixels."""

    sample: Sample
    rgb: np.ndarray
    depth: np.ndarray
    valid: np.ndarray

    @property
    def pixels(self) -> int:
        return self.depth.size


@dataclass(frozen=True)
class RunOptions:
    """How the models run: the space each is aligned in, images per network call, tiling, where raw predictions go."""

    kinds: Mapping[str, str]
    batch_size: int = 1
    tile_mode: str = "off"
    tiles: Mapping[str, TileConfig] = field(default_factory=dict)
    save_dir: Path | None = None


@dataclass
class SetResult:
    """One set's per-image rows (every model), the samples that could not be scored, the predictions made by
    tiling and the time it took."""

    benchmark: ModuleType
    rows: list[dict[str, object]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    tiled: int = 0
    seconds: float = 0.0

    @property
    def scored(self) -> int:
        """Images scored (the same for every model)."""
        return len({row["image"] for row in self.rows})


def load_sample(benchmark: ModuleType, files: SetFiles, sample: Sample) -> Loaded:
    """Read and prepare one sample; InputError when a file is missing or unreadable or nothing is valid."""
    rgb = decode_rgb(files.read(sample.rgb), sample.rgb)
    mask = files.read(sample.mask) if sample.mask else None
    depth, measured = benchmark.ground_truth(files.read(sample.depth), sample.depth, rgb.shape[:2], mask)
    return Loaded(sample, *PROTOCOLS[benchmark.NAME].prepare(rgb, depth, measured))


def read_ahead(samples: Sequence[Sample], load: Callable[[Sample], Loaded],
               workers: int = WORKERS) -> Iterator[tuple[Sample, Loaded | InputError]]:
    """`load` each sample in background threads and yield them in order, with InputErrors yielded, not raised.

    As many are queued as `READ_AHEAD_PIXELS` holds of the last one read (at least one, at most 16).
    """
    remaining = iter(samples)
    queue: deque[tuple[Sample, Future]] = deque()
    ahead = 1

    def attempt(sample: Sample) -> Loaded | InputError:
        try:
            return load(sample)
        except InputError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anydepth-bench-read") as pool:

        def top_up() -> None:
            while len(queue) < ahead and (sample := next(remaining, None)) is not None:
                queue.append((sample, pool.submit(attempt, sample)))

        try:
            top_up()
            while queue:
                sample, future = queue.popleft()
                result = future.result()
                if isinstance(result, Loaded):
                    ahead = min(16, max(1, READ_AHEAD_PIXELS // result.pixels))
                top_up()  # before handing this one over, so the next ones are read while it is used
                yield sample, result
        finally:
            for _, future in queue:
                future.cancel()


def prediction_path(save_dir: Path, benchmark: str, rgb: str, model: str | None = None) -> Path:
    """Where a raw prediction is saved: `DIR/<benchmark>/<rgb path with .npy>`, or with a `model` (when several
    are compared) `DIR/<model>/<benchmark>/…`, the model's label made a folder name."""
    folder = save_dir if model is None else save_dir / (re.sub(r"[^\w.+-]+", "_", model).strip("._") or "model")
    return folder / benchmark / PurePosixPath(rgb).with_suffix(".npy")


class SetRun:
    """Every model on every sample of one set (see the module docstring)."""

    def __init__(self, benchmark: ModuleType, predictors: Mapping[str, MapPredictor], options: RunOptions,
                 progress: Callable[[], None] | None = None,
                 tiles_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.benchmark = benchmark
        self.protocol: Protocol = PROTOCOLS[benchmark.NAME]
        self.predictors = predictors
        self.options = options
        self.progress = progress or (lambda: None)
        self.tiles_progress = tiles_progress
        self.result = SetResult(benchmark)
        self.pending: deque[tuple[Loaded, Future]] = deque()

    def run(self, files: SetFiles, samples: Sequence[Sample]) -> SetResult:
        """Score every sample; unreadable ones are recorded in `failures` and skipped for every model."""
        start = time.perf_counter()
        batch: list[Loaded] = []
        reader = read_ahead(samples, lambda s: load_sample(self.benchmark, files, s))
        with closing(reader), ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="anydepth-bench-score") as scorer:
            for sample, loaded in reader:
                if isinstance(loaded, InputError):
                    self._fail(sample, loaded)
                    continue
                batch.append(loaded)
                if len(batch) >= self.options.batch_size or sum(item.pixels for item in batch) >= BATCH_PIXELS:
                    self._predict(batch, scorer)
                    batch = []
            self._predict(batch, scorer)
            while self.pending:
                self._collect()
        self.result.seconds = time.perf_counter() - start
        return self.result

    def _fail(self, sample: Sample, error: Exception) -> None:
        self.result.failures.append((sample.rgb, str(error)))
        self.progress()

    def _predict(self, batch: list[Loaded], scorer: ThreadPoolExecutor) -> None:
        """Run every model on `batch` and queue each sample's scoring; a sample a model fails on is skipped."""
        maps: list[dict[str, np.ndarray] | InputError] = [{} for _ in batch]
        for name, predictor in self.predictors.items():
            for index, values in enumerate(self._maps(name, predictor, batch)):
                if isinstance(maps[index], dict):
                    maps[index] = values if isinstance(values, InputError) else {**maps[index], name: values}
        for item, item_maps in zip(batch, maps):
            if isinstance(item_maps, InputError):
                self._fail(item.sample, item_maps)
                continue
            self.pending.append((item, scorer.submit(self._score, item, item_maps)))
            while sum(queued.pixels for queued, _ in self.pending) > SCORE_AHEAD_PIXELS and len(self.pending) > 1:
                self._collect()

    def _maps(self, name: str, predictor: MapPredictor, batch: list[Loaded]) -> list[np.ndarray | InputError]:
        """The model's map of each photo (tiled where the options say; else at its ground truth's size, by the
        model's own resizing) or the InputError it failed with."""
        from anydepth_cli.inference.tiling import predict_tiled, should_tile

        images = [item.rgb for item in batch]
        mode = self.options.tile_mode
        tiled = [mode == "on" or (mode == "auto" and should_tile(*image.shape[:2], predictor.input_size))
                 for image in images]
        results: list[np.ndarray | InputError] = [np.empty(0)] * len(images)
        for index in (i for i, tile in enumerate(tiled) if tile):
            progress = self.tiles_progress and (lambda done, total: self.tiles_progress(name, done, total))
            try:
                results[index] = predict_tiled(images[index], predictor, self.options.tiles[name], progress).values
            except InputError as exc:
                results[index] = exc
                continue
            self.result.tiled += 1
        whole = [i for i, tile in enumerate(tiled) if not tile]
        for index, values in zip(whole, self._whole(predictor, [images[i] for i in whole],
                                                    [batch[i].depth.shape for i in whole])):
            results[index] = values
        return results

    def _whole(self, predictor: MapPredictor, images: list[np.ndarray],
               sizes: list[tuple[int, int]]) -> list[np.ndarray | InputError]:
        """One network pass per image, batched, each map at its entry of `sizes`; when the batch does not fit,
        one image at a time."""
        if not images:
            return []
        try:
            return list(predictor.predict_batch(images, sizes))
        except InputError as exc:
            if len(images) == 1:
                return [exc]
            return [result for image, size in zip(images, sizes)
                    for result in self._whole(predictor, [image], [size])]

    def _score(self, item: Loaded, maps: Mapping[str, np.ndarray]) -> list[dict[str, object]]:
        """Each model's row for one sample (in the scoring thread); saves the raw predictions when asked."""
        rows = []
        height, width = item.depth.shape
        for name, values in maps.items():
            if values.shape != item.depth.shape:  # a tiled map, at its photo's size
                values = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
            if self.options.save_dir is not None:
                model = name if len(self.predictors) > 1 else None
                write_npy(prediction_path(self.options.save_dir, self.benchmark.NAME, item.sample.rgb, model), values)
            kind = self.options.kinds[name]
            row: dict[str, object] = {"benchmark": self.benchmark.NAME, "image": item.sample.rgb,
                                      "depth": item.sample.depth, "model": name}
            row.update(self.protocol.score(values, item.depth, item.valid, kind))
            row.update(aligned_as=kind)
            rows.append(row)
        return rows

    def _collect(self) -> None:
        """Wait for the oldest queued sample's scores and keep them."""
        item, future = self.pending.popleft()
        self.result.rows.extend(future.result())
        self.progress()
