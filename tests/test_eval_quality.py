"""Data-quality scores, streaming scoring and keep-selection."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from anydepth_cli.errors import UsageError
from anydepth_cli.evaluation.quality import (
    ScoreRow,
    distribution_score,
    gradient_score,
    plot_score_histograms,
    score_array,
    score_folder,
    select_keep,
    write_score_csv,
)


def _plane(size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return 1.0 + 0.05 * x + 0.02 * y


def test_uniform_depth_scores_full_marks() -> None:
    depth = np.linspace(1.0, 10.0, 64 * 64).reshape(64, 64)
    dist = distribution_score(depth)
    assert dist.s_range == 1.0
    assert dist.s_conc == 1.0
    assert dist.s_chi2 == pytest.approx(1.0, abs=1e-3)
    assert dist.s_dist == pytest.approx(1.0, abs=1e-3)


def test_distribution_score_matches_hand_computed_histogram() -> None:
    # 20 values over [0, 16], bin width 0.8: bin 0 holds the four zeros, 16 bins hold one value
    # each, bins 4, 9 and 14 are empty. N/K = 1, chi2 = 9 + 3 = 12, p = 0.2.
    values = np.array([0.0] * 4 + list(range(1, 17)), dtype=np.float64)
    dist = distribution_score(values)
    assert dist.s_chi2 == pytest.approx(math.exp(-12 / 20))
    assert dist.s_conc == pytest.approx(1 - (0.2 - 0.1) / (0.5 - 0.1))
    assert dist.s_range == pytest.approx(17 / 20)
    assert dist.s_dist == pytest.approx(0.5 * math.exp(-0.6) + 0.3 * 0.75 + 0.2 * 0.85)


def test_constant_map_scores_low() -> None:
    flat = score_array(np.full((32, 32), 3.0))
    assert flat.s_range == pytest.approx(1 / 20)
    assert flat.s_conc == 0.0
    assert flat.s_chi2 == pytest.approx(math.exp(-19))
    assert flat.s_dist < 0.02
    good = score_array(_plane())
    assert flat.total < good.total - 0.3


def test_gradient_score_falls_monotonically_with_noise() -> None:
    base = _plane()
    noise = np.random.default_rng(7).standard_normal(base.shape)
    valid = np.ones(base.shape, dtype=bool)
    scores = [gradient_score(base + std * noise, valid) for std in (0.0, 0.002, 0.01, 0.03, 0.1)]
    assert scores[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_gradient_score_ignores_edges_and_holes() -> None:
    depth = _plane()
    depth[:, 32:] += 5.0  # a sharp step: its two Sobel columns are under 10 % of the pixels
    valid = np.ones(depth.shape, dtype=bool)
    valid[10:14, 10:14] = False
    depth[10:14, 10:14] = 0.0
    assert gradient_score(depth, valid) == pytest.approx(1.0)


def test_low_valid_flag() -> None:
    depth = _plane()
    depth[: int(64 * 0.85)] = 0.0  # 15 % valid
    row = score_array(depth)
    assert row.low_valid and row.valid_fraction == pytest.approx(10 / 64)
    depth = _plane()
    depth[:40] = np.nan  # 37.5 % valid
    row = score_array(depth)
    assert not row.low_valid and not math.isnan(row.total)


def test_empty_map_has_nan_scores() -> None:
    row = score_array(np.zeros((8, 8)))
    assert row.low_valid and math.isnan(row.s_grad) and math.isnan(row.total)


def _row(path: str, s_grad: float, s_dist: float, *, low_valid: bool = False, error: str = "") -> ScoreRow:
    return ScoreRow(path, s_grad, s_dist, (s_grad + s_dist) / 2, 0.0, 0.0, 0.0, 1.0, low_valid, error)


def _constructed() -> list[ScoreRow]:
    grads = [0.10, 0.20, 0.90, 0.80, 0.70, 0.60, 0.95, 0.85, 0.75, 0.65]
    dists = [0.90, 0.10, 0.20, 0.80, 0.70, 0.60, 0.95, 0.85, 0.75, 0.65]
    rows = [_row(f"s{i}", g, d) for i, (g, d) in enumerate(zip(grads, dists))]
    rows.insert(3, _row("broken", math.nan, math.nan, error="cannot decode"))
    rows.insert(6, _row("sparse", 0.99, 0.99, low_valid=True))
    return rows


def test_select_keep_drops_the_bottom_of_each_score() -> None:
    rows = _constructed()
    # keep 0.8 of 10 ranked rows: the 2 lowest S_grad (s0, s1) and the 2 lowest S_dist (s1, s2) go.
    assert select_keep(rows, 0.8) == ["s3", "s4", "s5", "s6", "s7", "s8", "s9"]
    assert select_keep(rows, 1.0) == [f"s{i}" for i in range(10)]
    # with the flagged row ranked, n = 11 and round(0.2 * 11) = 2 still go on each score.
    assert "sparse" in select_keep(rows, 0.8, drop_low_valid=False)
    with pytest.raises(UsageError):
        select_keep(rows, 0.0)


def test_score_csv_round_trip_and_histograms(tmp_path: Path) -> None:
    csv_path = tmp_path / "scores.csv"
    assert write_score_csv(iter(_constructed()), csv_path) == 12
    assert select_keep(csv_path, 0.8) == select_keep(_constructed(), 0.8)
    png = plot_score_histograms(csv_path, tmp_path / "hist.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp-*"))


def test_score_folder_streams_in_order_with_bounded_in_flight(tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        depth = np.round(_plane(32) * 1000 + 100 * i).astype(np.uint16)
        path = tmp_path / f"d{i}.png"
        cv2.imwrite(str(path), depth)
        paths.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths.insert(2, broken)

    consumed = 0

    def lazy() -> Iterator[Path]:
        nonlocal consumed
        for p in paths:
            consumed += 1
            yield p

    ticks = []
    stream = score_folder(lazy(), workers=2, progress=lambda: ticks.append(1), max_in_flight=2)
    first = next(stream)
    assert consumed <= 2  # the rest of the paths have not been read yet
    rows = [first, *stream]
    assert [r.path for r in rows] == [str(p) for p in paths]
    assert len(ticks) == len(paths)
    assert rows[2].error and math.isnan(rows[2].total)
    assert all(not r.error and r.s_grad == pytest.approx(1.0) for i, r in enumerate(rows) if i != 2)
    serial = list(score_folder(paths, workers=1))
    assert [r.total for r in serial if not r.error] == [r.total for r in rows if not r.error]
