"""Tiled inference against an oracle network that knows the true disparity (or depth) of a synthetic scene.

The test images are float32 RGB whose channel 0 is the normalised x coordinate of each pixel
centre and channel 1 the normalised y coordinate. Linear ramps survive cropping and resizing,
so the oracle can compute the ground-truth disparity at every pixel of whatever crop, at
whatever size, it is given.
"""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from anydepth_cli.errors import UsageError
from anydepth_cli.inference.align import fit_scale_shift
from anydepth_cli.inference.tiling import (
    TileConfig,
    default_tile_config,
    predict_tiled,
    should_tile,
    tile_grid,
)

HEIGHT, WIDTH = 768, 1024
INPUT_SIZE = 128
CONFIG = TileConfig(tile_size=256, overlap=64, batch_size=4)


def scene_disparity(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Ground truth at normalised coordinates: a slanted background plane, a near wall parallel
    to it in the top right (a step along its left and bottom edges) and a sphere cap (curved,
    with a silhouette)."""
    u = u.astype(np.float64)
    v = v.astype(np.float64)
    disparity = 0.35 + 0.25 * u + 0.15 * v
    disparity = np.where((u > 0.62) & (v < 0.45), disparity + 0.3, disparity)
    r2 = ((u - 0.3) / 0.16) ** 2 + ((v - 0.62) / 0.2) ** 2
    cap = 0.95 + 0.35 * np.sqrt(np.clip(1.0 - r2, 0.0, None))
    return np.where(r2 < 1.0, np.maximum(disparity, cap), disparity)


def coordinate_image(height: int, width: int) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.float32)
    image[..., 0] = ((np.arange(width) + 0.5) / width)[None, :]
    image[..., 1] = ((np.arange(height) + 0.5) / height)[:, None]
    image[..., 2] = 0.5
    return image


class Oracle:
    """Returns the true disparity of the crop it is given, as a network would: an image larger
    than the input size is downsampled to it, predicted there and upsampled (so the global pass
    is blurry), and every image gets its own random scale and shift, a gentle low-frequency
    distortion and mild noise. `corrupt_origin` names a tile, by its top-left pixel in the full
    image, whose prediction gets a strong non-affine error."""

    def __init__(
        self,
        input_size: int = INPUT_SIZE,
        seed: int = 0,
        jitter: bool = True,
        corrupt_origin: tuple[int, int] | None = None,
        full_size: tuple[int, int] = (HEIGHT, WIDTH),
        kind: str = "disparity",
    ) -> None:
        self.input_size = input_size
        self.output_kind = kind
        self.rng = np.random.default_rng(seed)
        self.jitter = jitter
        self.corrupt_origin = corrupt_origin
        self.full_size = full_size
        self.batches: list[list[tuple[int, int]]] = []

    def predict_batch(self, images):
        self.batches.append([image.shape[:2] for image in images])
        return [self._predict(image) for image in images]

    def _predict(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        factor = min(1.0, self.input_size / max(height, width))
        small = cv2.resize(
            image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA
        ) if factor < 1.0 else image
        u, v = small[..., 0], small[..., 1]
        disparity = scene_disparity(u, v)
        if self.output_kind == "depth":
            disparity = 1.0 / disparity
        if self.jitter:
            phase = self.rng.uniform(0.0, 1.0, size=2)
            disparity += 0.004 * np.sin(2 * np.pi * (2 * u + phase[0])) * np.sin(2 * np.pi * (1.5 * v + phase[1]))
            disparity += self.rng.normal(0.0, 0.001, size=disparity.shape)
        if self.corrupt_origin is not None:
            full_h, full_w = self.full_size
            origin = (round(float(image[0, 0, 1]) * full_h - 0.5), round(float(image[0, 0, 0]) * full_w - 0.5))
            if origin == self.corrupt_origin and (height, width) != self.full_size:
                disparity += 0.6 * ((u - u.mean()) / np.ptp(u)) ** 2
        if self.jitter:
            disparity = self.rng.uniform(0.5, 2.0) * disparity + self.rng.uniform(-0.3, 0.3)
        disparity = disparity.astype(np.float32)
        if factor < 1.0:
            disparity = cv2.resize(disparity, (width, height), interpolation=cv2.INTER_LINEAR)
        return disparity


def align_to(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return fit_scale_shift(pred, truth).apply(pred)


def abs_rel(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    error = np.abs(align_to(pred, truth) - truth) / truth
    return float(error.mean() if mask is None else error[mask].mean())


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(x.astype(np.float64))
    return np.hypot(gx, gy)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), dtype=np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def near_depth_edge(truth: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` of a depth edge (step or silhouette) of the ground truth."""
    grad = gradient_magnitude(truth)
    return dilate(grad > 20 * np.median(grad), radius)


def planar(truth: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose `radius` neighbourhood lies on one plane of the ground truth: the smooth
    parts where the true gradient is the same everywhere (both planes share their slant)."""
    curvature = np.zeros_like(truth)
    curvature[1:-1, 1:-1] = np.abs(
        truth[:-2, 1:-1] + truth[2:, 1:-1] + truth[1:-1, :-2] + truth[1:-1, 2:] - 4 * truth[1:-1, 1:-1]
    )
    return ~dilate(curvature > 1e-6, radius)


def tile_edge_distance(height: int, width: int, config: TileConfig) -> np.ndarray:
    """Distance in pixels from each pixel to the nearest tile edge inside the image."""
    tiles = tile_grid(height, width, config)
    dist_y = np.full(height, np.inf)
    dist_x = np.full(width, np.inf)
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    for y0, y1, x0, x1 in tiles:
        for edge in (y0, y1):
            if 0 < edge < height:
                dist_y = np.minimum(dist_y, np.abs(ys - edge))
        for edge in (x0, x1):
            if 0 < edge < width:
                dist_x = np.minimum(dist_x, np.abs(xs - edge))
    return np.minimum(dist_y[:, None], dist_x[None, :])


@pytest.fixture(scope="module")
def scene():
    image = coordinate_image(HEIGHT, WIDTH)
    truth = scene_disparity(image[..., 0], image[..., 1])
    return image, truth


@pytest.fixture(scope="module")
def merged(scene):
    image, _ = scene
    oracle = Oracle(seed=1)
    return predict_tiled(image, oracle, CONFIG), oracle


# --- configuration and grid -------------------------------------------------------------


@pytest.mark.parametrize(
    "tile_size, overlap, batch_size",
    [(8, 2, 1), (256, -1, 1), (256, 129, 1), (256, 64, 0)],
)
def test_invalid_tile_config_is_a_usage_error(tile_size, overlap, batch_size):
    with pytest.raises(UsageError):
        TileConfig(tile_size=tile_size, overlap=overlap, batch_size=batch_size)


def test_default_config_overlaps_at_least_a_quarter_tile():
    config = default_tile_config(518)
    assert config.tile_size > 518
    assert config.overlap * 4 >= config.tile_size
    assert config.batch_size >= 1


def test_should_tile_when_shorter_side_far_exceeds_input():
    assert should_tile(3000, 4000, 518)
    assert should_tile(6000, 8000, 518)
    assert not should_tile(480, 640, 518)
    assert not should_tile(1036, 4144, 518)
    assert should_tile(1036, 8000, 518)  # longer than 4:1: the capped single pass sees it at 1/2.8
    assert should_tile(1037, 1037, 518)


@pytest.mark.parametrize(
    "height, width, config",
    [
        (768, 1024, TileConfig(256, 64, 4)),
        (1000, 1000, TileConfig(256, 100, 2)),
        (300, 2000, TileConfig(512, 128, 3)),  # shorter than a tile: one row of clipped tiles
        (640, 640, TileConfig(320, 0, 1)),  # exact fit, no overlap
        (100, 120, TileConfig(256, 64, 1)),  # one tile
    ],
)
def test_tile_grid_covers_image_with_equal_tiles_and_overlap(height, width, config):
    tiles = tile_grid(height, width, config)
    sizes = {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in tiles}
    assert sizes == {(min(config.tile_size, height), min(config.tile_size, width))}
    covered = np.zeros((height, width), dtype=np.int32)
    for y0, y1, x0, x1 in tiles:
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    for axis in (slice(0, 2), slice(2, 4)):
        spans = sorted({tile[axis] for tile in tiles})
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end - start >= config.overlap


# --- accuracy, seams, detail ---------------------------------------------------------------


def test_merged_matches_ground_truth_up_to_scale_and_shift(scene, merged):
    _, truth = scene
    result, _ = merged
    assert result.values.shape == truth.shape and result.values.dtype == np.float32
    assert result.confidence is None
    error = abs_rel(result.values, truth)
    print(f"\ntiled AbsRel vs ground truth: {error:.4%} ({result.tiles} tiles)")
    assert error <= 0.01


def test_a_depth_model_is_tiled_in_depth_space(scene):
    image, disparity = scene
    truth = 1.0 / disparity
    result = predict_tiled(image, Oracle(seed=4, kind="depth"), CONFIG)
    error = abs_rel(result.values, truth)
    print(f"\ntiled AbsRel of a depth model vs true depth: {error:.4%}")
    assert error <= 0.01
    assert abs_rel(result.values, disparity) > 3 * error


def test_merged_map_has_no_seams(scene, merged):
    _, truth = scene
    result, _ = merged
    smooth = planar(truth, radius=10)
    distance = tile_edge_distance(HEIGHT, WIDTH, CONFIG)
    border = smooth & (distance <= 2.0)
    interior = smooth & (distance > 8.0)
    assert border.sum() > 1000 and interior.sum() > 1000
    grad = gradient_magnitude(result.values)
    ratio = grad[border].mean() / grad[interior].mean()
    truth_grad = gradient_magnitude(truth)
    truth_ratio = truth_grad[border].mean() / truth_grad[interior].mean()
    print(f"\nseam ratio (border / interior gradient): {ratio:.4f} (ground truth: {truth_ratio:.4f})")
    assert abs(ratio - 1.0) <= 0.10


def test_tiles_add_detail_the_global_pass_lacks_at_a_step(scene, merged):
    image, truth = scene
    result, _ = merged
    global_map = Oracle(seed=2).predict_batch([image])[0]
    band = near_depth_edge(truth, radius=6)
    tiled_error = abs_rel(result.values, truth, band)
    global_error = abs_rel(global_map, truth, band)
    print(f"\nAbsRel near depth edges: tiled {tiled_error:.4%}, global pass only {global_error:.4%}")
    assert tiled_error < 0.5 * global_error


def test_tiles_run_in_batches_of_equal_size(merged):
    result, oracle = merged
    global_call, *tile_calls = oracle.batches
    assert global_call == [(HEIGHT, WIDTH)]
    assert sum(len(call) for call in tile_calls) == result.tiles == len(tile_grid(HEIGHT, WIDTH, CONFIG))
    assert all(len(call) == CONFIG.batch_size for call in tile_calls[:-1])
    assert {shape for call in tile_calls for shape in call} == {(CONFIG.tile_size, CONFIG.tile_size)}


def test_single_tile_covering_the_image_equals_the_untiled_prediction():
    image = coordinate_image(200, 300)
    config = TileConfig(tile_size=512, overlap=128, batch_size=2)
    untiled = Oracle(jitter=False).predict_batch([image])[0]
    result = predict_tiled(image, Oracle(jitter=False), config, confidence=True)
    assert result.tiles == 1
    np.testing.assert_allclose(result.values, untiled, rtol=1e-5, atol=1e-6)
    assert result.confidence is not None and result.confidence.min() > 0.99


def test_progress_reports_every_tile(scene):
    image, _ = scene
    calls: list[tuple[int, int]] = []
    config = TileConfig(tile_size=256, overlap=64, batch_size=3)
    result = predict_tiled(image, Oracle(seed=3), config, progress=lambda done, total: calls.append((done, total)))
    total = len(tile_grid(HEIGHT, WIDTH, config))
    assert result.tiles == total
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(calls) == 1 + -(-total // config.batch_size)


def test_confidence_is_lower_around_an_inconsistent_tile(scene):
    image, truth = scene
    tiles = tile_grid(HEIGHT, WIDTH, CONFIG)
    y0, y1, x0, x1 = tiles[len(tiles) // 2 + 1]
    oracle = Oracle(seed=4, corrupt_origin=(y0, x0))
    result = predict_tiled(image, oracle, CONFIG, confidence=True)
    confidence = result.confidence
    assert confidence is not None and confidence.dtype == np.float32 and confidence.shape == truth.shape
    assert confidence.min() >= 0.0 and confidence.max() <= 1.0
    smooth = ~near_depth_edge(truth, radius=10)
    inside = np.zeros_like(smooth)
    inside[y0:y1, x0:x1] = True
    corrupted = confidence[inside & smooth].mean()
    elsewhere = confidence[~inside & smooth].mean()
    print(f"\nmean confidence: corrupted tile {corrupted:.3f}, elsewhere {elsewhere:.3f}")
    assert corrupted < elsewhere - 0.2


# --- memory ---------------------------------------------------------------------------------


class ResizingPredictor:
    """A cheap stand-in network: grey level at the input size, resized back."""

    input_size = 64
    output_kind = "disparity"

    def predict_batch(self, images):
        out = []
        for image in images:
            height, width = image.shape[:2]
            small = cv2.resize(image, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
            grey = small.mean(axis=2, dtype=np.float32) / 255.0
            out.append(cv2.resize(grey, (width, height), interpolation=cv2.INTER_LINEAR))
        return out


def test_memory_is_bounded_by_accumulators_and_tile_batch():
    height, width = 1536, 2048
    rng = np.random.default_rng(5)
    image = cv2.resize(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (width, height))
    config = TileConfig(tile_size=256, overlap=64, batch_size=4)
    full_float32 = height * width * 4
    tracemalloc.start()
    try:
        result = predict_tiled(image, ResizingPredictor(), config, confidence=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.tiles > 50
    # the global map, the weighted sum and the confidence accumulator, plus tile-sized work
    print(f"\npeak traced memory: {peak / full_float32:.2f} full-size float32 arrays")
    assert peak < 3 * full_float32 + 64 * config.tile_size**2 * 4
