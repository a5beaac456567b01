"""One standard set through every model, on the streaming engine (`evaluation.scoring`): samples read ahead in
threads, predicted in batches (or tiles), scored in background threads, so that reading, inference and scoring
overlap.

Memory stays bounded whatever the set: samples in flight (read, predicted, waiting to be scored) hold at most
`READ_AHEAD_PIXELS` of photos (at least one), and a network call takes at most `BATCH_PIXELS` of full-resolution
photos (one ETH3D image alone).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import cv2
import numpy as np

from anydepth_cli.datasets.archive import Sample, SetFiles
from anydepth_cli.datasets.family import Family, Reader
from anydepth_cli.evaluation.failures import Failure
from anydepth_cli.evaluation.protocols import PROTOCOLS, Protocol
from anydepth_cli.evaluation.scoring import score_models
from anydepth_cli.inference.engine import Engine, Prediction
from anydepth_cli.inference.engine import Loaded as EngineInput
from anydepth_cli.io.writers import write_npy

if TYPE_CHECKING:  # both import torch, which reading and scoring do not need
    from anydepth_cli.inference.predictor import MapPredictor
    from anydepth_cli.inference.tiling import TileConfig

READ_AHEAD_PIXELS = 48_000_000
BATCH_PIXELS = 8_000_000
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

    benchmark: Family
    rows: list[dict[str, object]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    tiled: int = 0
    seconds: float = 0.0

    @property
    def scored(self) -> int:
        """Images scored (the same for every model)."""
        return len({row["image"] for row in self.rows})


def load_sample(reader: Reader, sample: Sample) -> Loaded:
    """Read and prepare one sample of a benchmark; InputError when a file is missing or unreadable or nothing is
    valid."""
    rgb = reader.rgb(sample)
    depth, measured = reader.truth(sample, rgb.shape[:2])
    return Loaded(sample, *PROTOCOLS[reader.family.name].prepare(rgb, depth, measured))


def prediction_path(save_dir: Path, benchmark: str, rgb: str, model: str | None = None) -> Path:
    """Where a raw prediction is saved: `DIR/<benchmark>/<rgb path with .npy>`, or with a `model` (when several
    are compared) `DIR/<model>/<benchmark>/…`, the model's label made a folder name."""
    folder = save_dir if model is None else save_dir / (re.sub(r"[^\w.+-]+", "_", model).strip("._") or "model")
    return folder / benchmark / PurePosixPath(rgb).with_suffix(".npy")


class SetRun:
    """Every model on every sample of one set (see the module docstring)."""

    def __init__(self, benchmark: Family, predictors: Mapping[str, MapPredictor], options: RunOptions,
                 progress: Callable[[], None] | None = None,
                 tiles_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.benchmark = benchmark
        self.protocol: Protocol = PROTOCOLS[benchmark.name]
        self.predictors = predictors
        self.options = options
        self.progress = progress
        self.tiles_progress = tiles_progress
        self.result = SetResult(benchmark)
        self._counting = threading.Lock()

    def run(self, files: SetFiles, samples: Sequence[Sample]) -> SetResult:
        """Score every sample; unreadable ones, and ones a model fails on, are recorded in `failures` and skipped
        for every model."""
        start = time.perf_counter()
        reader = Reader(self.benchmark, files)
        scores = score_models(samples, self.predictors, self._engine, lambda s: self._load(reader, s), self._score,
                              lambda sample: sample.rgb, self.progress)
        self.result.failures = scores.failures
        self.result.rows = [row for _, by_model in scores.scored for row in by_model.values()]
        self.result.seconds = time.perf_counter() - start
        return self.result

    def _engine(self, name: str, predictor: MapPredictor) -> Engine:
        """The model's engine: photos tiled where the options say, at most BATCH_PIXELS of them to a network call."""
        from anydepth_cli.inference.tiling import should_tile

        mode, config = self.options.tile_mode, self.options.tiles.get(name)

        def tiling(image: np.ndarray) -> TileConfig | None:
            tiled = mode == "on" or (mode == "auto" and should_tile(*image.shape[:2], predictor.input_size))
            return config if tiled else None

        report = self.tiles_progress
        return Engine(predictor, self.options.batch_size, tiling=tiling, pixel_budget=READ_AHEAD_PIXELS,
                      batch_pixels=BATCH_PIXELS,
                      tile_progress=None if report is None else lambda _, done, total: report(name, done, total))

    def _load(self, reader: Reader, sample: Sample) -> EngineInput:
        loaded = load_sample(reader, sample)
        return EngineInput(loaded.rgb, loaded.depth.shape, loaded)

    def _score(self, name: str, sample: Sample, read: EngineInput, prediction: Prediction) -> dict[str, object]:
        """The model's row for one sample (in a write-behind thread); saves the raw prediction when asked."""
        item: Loaded = read.data
        values = prediction.values
        if prediction.tiles:
            with self._counting:
                self.result.tiled += 1
        height, width = item.depth.shape
        if values.shape != item.depth.shape:  # a tiled map, at its photo's size
            values = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
        if self.options.save_dir is not None:
            model = name if len(self.predictors) > 1 else None
            write_npy(prediction_path(self.options.save_dir, self.benchmark.name, sample.rgb, model), values)
        kind = self.options.kinds[name]
        row: dict[str, object] = {"benchmark": self.benchmark.name, "image": sample.rgb, "depth": sample.depth,
                                  "model": name}
        row.update(self.protocol.score(values, item.depth, item.valid, kind))
        row.update(aligned_as=kind)
        return row
