"""Tiled inference: full-resolution maps for images much larger than the network's input.

A global pass over the whole image gives the layout of the scene in one consistent frame;
overlapping tiles, each a crop of the full-resolution image that the predictor resizes to its
input size, add detail at a higher working resolution. The network's output (depth or
disparity, whichever the model declares) is affine-invariant, so each tile is brought into the
global pass's frame by a robust scale-and-shift fit in that same space before the tiles are
blended with smooth weights.

Alignment weights. Where the global map changes fast it is blurred (it was predicted at the
network's input size and upsampled), so the fit trusts it less there: a sample's weight is
`1 / (1 + (g / EDGE_GRADIENT)^2)`, where `g` is the global map's gradient magnitude expressed in
robust value ranges (1st to 99th percentile of the global map) per image extent (the longer
side). A smooth slanted plane has `g` around 1 and keeps full weight; a depth edge blurred over
a few pixels has `g` in the tens to hundreds and is nearly ignored. The fit then rejects
outliers (see `robust_fit_scale_shift`).

Blending weights. Each tile's weight is the outer product of two 1-D windows, one per axis:
1 inside, falling as a raised-cosine ramp of `overlap` pixels to near zero at every tile edge
that lies inside the image, but not at the image border (a pixel on the border may be covered
by one tile only and keeps full weight). The windows are strictly positive, so every pixel is
covered, and the ramps of neighbouring tiles overlapping by exactly `overlap` sum to one.

Memory. Per-tile work is tile sized. Besides the input image, the full-size arrays are the
global map, the weighted sum of aligned tiles (which becomes the result), and with
`confidence` one more accumulator; the sum of weights is separable and kept as two vectors.

Confidence. For each pixel, `d^2` is the weighted mean over the tiles covering it of
`(aligned tile - global map)^2`: the spread of the aligned tiles around their mean plus the
distance of that mean from the global map. With `tau` the alignment's outlier cutoff
(`FIT_CUTOFF` times the median over tiles of the robust residual spread of the fit),
confidence is `1 / (1 + (d / tau)^2)`: 1 where tiles and global pass agree, 0.5 at the
cutoff, toward 0 where they disagree (inconsistent tiles, and depth edges, where the tiles
resolve detail the global pass blurs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from anydepth_cli.errors import UsageError
from anydepth_cli.inference.align import robust_fit_scale_shift
from anydepth_cli.inference.predictor import MapPredictor
from anydepth_cli.inference.preprocess import TOKEN_CAP_FACTOR

MIN_TILE_SIZE = 16
"""The smallest accepted tile side, in pixels."""

AUTO_TILE_FACTOR = 2.0
"""`--tile auto` tiles when the image's shorter side exceeds this many network input sizes."""

EDGE_GRADIENT = 10.0
"""Global-map gradient (value ranges per image extent) at which a fit sample's weight halves."""

FIT_CUTOFF = 3.0
"""Outlier cutoff of the tile alignment, in robust spreads of the fit residual."""

_FIT_SAMPLES_PER_AXIS = 256
_FINALIZE_ROWS = 256


@dataclass(frozen=True)
class TileConfig:
    """How an image is cut into tiles.

    `tile_size` is the side of a square tile in full-resolution pixels; the predictor resizes
    each tile to its input size, so `tile_size` sets the working resolution. `overlap` is the
    least number of pixels neighbouring tiles share (at most half a tile), and `batch_size`
    how many tiles go through the predictor at once. Invalid values raise `UsageError`.
    """

    tile_size: int
    overlap: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.tile_size < MIN_TILE_SIZE:
            raise UsageError(f"--tile-size must be at least {MIN_TILE_SIZE} pixels, got {self.tile_size}")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise UsageError(
                f"--overlap must be between 0 and half the tile size ({self.tile_size // 2}), got {self.overlap}"
            )
        if self.batch_size < 1:
            raise UsageError(f"the tile batch size must be at least 1, got {self.batch_size}")


@dataclass
class TiledResult:
    """A merged full-resolution map of the model's quantity (float32 H×W, in the global pass's frame), the
    per-pixel confidence in [0, 1] when asked for (else None), and the number of tiles run."""

    values: np.ndarray
    confidence: np.ndarray | None
    tiles: int


CPU_TILE_BATCH = 2
"""Tiles per batch on the CPU: the default model needs roughly 0.7 GB of activations per tile in
a batch, and two keep a 48 MP image within 3 GB."""


def default_tile_config(input_size: int, batch_size: int = CPU_TILE_BATCH, tile_size: int | None = None,
                        overlap: int | None = None) -> TileConfig:
    """Tiles of `tile_size` pixels (default twice the network's input size: working resolution
    half the full resolution), overlapping by `overlap` (default a quarter of a tile, rounded
    up), `batch_size` to a batch."""
    tile_size = tile_size or max(2 * input_size, MIN_TILE_SIZE)
    overlap = -(-tile_size // 4) if overlap is None else overlap
    return TileConfig(tile_size=tile_size, overlap=overlap, batch_size=batch_size)


def should_tile(height: int, width: int, input_size: int, factor: float = AUTO_TILE_FACTOR) -> bool:
    """Whether `--tile auto` tiles an image: when a single pass would lose more than `factor`× in
    resolution, i.e. when its shorter side exceeds `factor` times the network's input size, or,
    for an image longer than the token cap allows (`capped_network_size`), when it has more than
    `factor`² times the capped input's pixels."""
    return (min(height, width) > factor * input_size
            or height * width > factor**2 * TOKEN_CAP_FACTOR * input_size**2)


def _axis_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Equal-length spans covering [0, length), neighbours sharing at least `overlap` pixels."""
    size = min(tile, length)
    if size == length:
        return [(0, length)]
    count = math.ceil((length - overlap) / (size - overlap))
    starts = [i * (length - size) // (count - 1) for i in range(count)]
    return [(start, start + size) for start in starts]


def tile_grid(height: int, width: int, config: TileConfig) -> list[tuple[int, int, int, int]]:
    """Tiles `(y0, y1, x0, x1)`, row by row, covering the image: all of the same size
    (`tile_size` square, clipped to the image), neighbours sharing at least `config.overlap`
    pixels, spread evenly so the first and last tiles touch the image border."""
    return [
        (y0, y1, x0, x1)
        for y0, y1 in _axis_spans(height, config.tile_size, config.overlap)
        for x0, x1 in _axis_spans(width, config.tile_size, config.overlap)
    ]


def _axis_window(start: int, end: int, length: int, ramp: int) -> np.ndarray:
    """The 1-D blending window of a span: raised-cosine ramps at ends inside the image."""
    window = np.ones(end - start, dtype=np.float32)
    if ramp > 0:
        rise = (0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)).astype(np.float32)
        if start > 0:
            window[:ramp] = rise
        if end < length:
            window[-ramp:] = rise[::-1]
    return window


def _robust_range(values: np.ndarray) -> float:
    """Spread between the 1st and 99th percentiles of a subsample; 1 if that is degenerate."""
    step_y = max(1, values.shape[0] // 1024)
    step_x = max(1, values.shape[1] // 1024)
    low, high = np.percentile(values[::step_y, ::step_x], [1.0, 99.0])
    spread = float(high - low)
    return spread if math.isfinite(spread) and spread > 0 else 1.0


def _align_tile(
    prediction: np.ndarray, reference: np.ndarray, value_range: float, extent: int
) -> tuple[np.ndarray, float]:
    """The tile prediction in the reference's frame, and the robust spread of the fit residual."""
    step_y = max(1, math.ceil(prediction.shape[0] / _FIT_SAMPLES_PER_AXIS))
    step_x = max(1, math.ceil(prediction.shape[1] / _FIT_SAMPLES_PER_AXIS))
    pred = prediction[::step_y, ::step_x]
    target = reference[::step_y, ::step_x]
    slope_sq = np.zeros(target.shape, dtype=np.float32)
    for axis, step in ((0, step_y), (1, step_x)):
        if target.shape[axis] > 1:
            slope_sq += np.gradient(target, step, axis=axis) ** 2
    slope_sq *= (extent / (value_range * EDGE_GRADIENT)) ** 2
    weight = 1.0 / (1.0 + slope_sq)
    fit, inlier = robust_fit_scale_shift(pred, target, weight, cutoff=FIT_CUTOFF)
    residual = np.abs(fit.apply(pred) - target)[inlier]
    spread = 1.4826 * float(np.median(residual)) if residual.size else 0.0
    return fit.apply(prediction), spread


@dataclass(frozen=True)
class _Axis:
    """The tiles' spans along one image axis, their blending windows and the windows' sum per pixel."""

    spans: list[tuple[int, int]]
    windows: list[np.ndarray]
    weight: np.ndarray

    @classmethod
    def of(cls, length: int, config: TileConfig) -> _Axis:
        spans = _axis_spans(length, config.tile_size, config.overlap)
        windows = [_axis_window(start, end, length, config.overlap) for start, end in spans]
        weight = np.zeros(length, dtype=np.float32)
        for (start, end), window in zip(spans, windows):
            weight[start:end] += window
        return cls(spans, windows, weight)


class _Blend:
    """The running window-weighted sums of the aligned tiles (and, for confidence, of their squared deviations
    from the global pass)."""

    def __init__(self, image: np.ndarray, global_map: np.ndarray, config: TileConfig, confidence: bool) -> None:
        height, width = image.shape[:2]
        self.rows, self.cols = _Axis.of(height, config), _Axis.of(width, config)
        self.global_map = global_map
        self.value_range = _robust_range(global_map)
        self.extent = max(height, width)
        self.total = np.zeros((height, width), dtype=np.float32)
        self.squares = np.zeros((height, width), dtype=np.float32) if confidence else None
        self.spreads: list[float] = []

    def add(self, r: int, c: int, prediction: np.ndarray) -> None:
        """Align tile (r, c) to the global pass and add it under its window."""
        (y0, y1), (x0, x1) = self.rows.spans[r], self.cols.spans[c]
        reference = self.global_map[y0:y1, x0:x1]
        aligned, spread = _align_tile(prediction, reference, self.value_range, self.extent)
        self.spreads.append(spread)
        window = np.outer(self.rows.windows[r], self.cols.windows[c])
        self.total[y0:y1, x0:x1] += window * aligned
        if self.squares is not None:
            aligned -= reference
            np.square(aligned, out=aligned)
            self.squares[y0:y1, x0:x1] += window * aligned

    def finish(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The blended map and the confidence, normalised in place a strip of rows at a time."""
        tau_sq = max(FIT_CUTOFF * float(np.median(self.spreads)), 1e-6 * self.value_range) ** 2
        for top in range(0, self.total.shape[0], _FINALIZE_ROWS):
            bottom = min(top + _FINALIZE_ROWS, self.total.shape[0])
            weight = np.outer(self.rows.weight[top:bottom], self.cols.weight)
            self.total[top:bottom] /= weight
            if self.squares is not None:
                strip = self.squares[top:bottom]
                weight *= tau_sq
                strip /= weight
                strip += 1.0
                np.reciprocal(strip, out=strip)
        return self.total, self.squares


def predict_tiled(
    image: np.ndarray,
    predictor: MapPredictor,
    config: TileConfig,
    progress: Callable[[int, int], None] | None = None,
    confidence: bool = False,
) -> TiledResult:
    """Full-resolution map of the predictor's quantity for `image` (RGB H×W×3, uint8 or float32 in [0, 1]) from a
    global pass plus overlapping tiles aligned to it and blended seamlessly.

    `progress(done, total)` is called with 0 tiles done before the first batch and after every
    batch. With `confidence`, the result carries a per-pixel confidence in [0, 1] (see the
    module docstring).
    """
    global_map = np.asarray(predictor.predict_batch([image])[0], dtype=np.float32)
    blend = _Blend(image, global_map, config, confidence)
    rows, cols = blend.rows.spans, blend.cols.spans
    tiles = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
    if progress is not None:
        progress(0, len(tiles))
    for first in range(0, len(tiles), config.batch_size):
        batch = tiles[first : first + config.batch_size]
        crops = [np.ascontiguousarray(image[rows[r][0] : rows[r][1], cols[c][0] : cols[c][1]]) for r, c in batch]
        for (r, c), prediction in zip(batch, predictor.predict_batch(crops)):
            blend.add(r, c, prediction)
        if progress is not None:
            progress(first + len(batch), len(tiles))
    values, confidences = blend.finish()
    return TiledResult(values=values, confidence=confidences, tiles=len(tiles))
