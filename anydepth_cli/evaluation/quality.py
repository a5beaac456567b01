"""AnyDepth's data-quality scores for depth maps, a streaming scorer for large datasets and keep-selection.

For one depth map, over its valid pixels (finite, > 0, and inside an optional mask):

* Depth Distribution Score. K = 20 bins over [min, max] of the valid depths; h = histogram,
  N = valid pixels, p_i = h_i / N.
  chi2 = Σ (h_i − N/K)² / (N/K) (against a uniform histogram), S_chi2 = exp(−chi2 / N);
  p = max_i p_i, S_conc = 1 if p ≤ 2/K else 1 − min(1, (p − 2/K) / (0.5 − 2/K));
  S_range = (non-empty bins) / K; S_dist = 0.5·S_chi2 + 0.3·S_conc + 0.2·S_range.
  A constant map (max == min, or a range too narrow for K distinct float bin edges) puts every
  pixel in one bin: S_range = 1/K, S_conc = 0, S_chi2 = exp(−(K − 1)).
* Gradient Continuity Score. Gradient magnitude from 3×3 Sobel derivatives (divided by 8, a
  per-pixel slope), taken only at valid pixels whose whole 3×3 neighbourhood is valid and inside
  the image, so holes and the image border do not read as edges. The top 10 % of those
  magnitudes are edges and dropped; over the rest, CV = std / mean (population std) and
  S_grad = 1 / (1 + CV). A mean of 0 (a flat map) gives S_grad = 1; no pixel with a fully valid
  neighbourhood (tiny or sparse maps) gives S_grad = NaN, and so Total = NaN.
* Total = (S_grad + S_dist) / 2. A valid fraction below 20 % sets `low_valid`.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
from array import array
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import cv2
import numpy as np

from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.datasets.generic import read_depth
from anydepth_cli.io.writers import atomic_write

BINS = 20
EDGE_FRACTION = 0.10
LOW_VALID_FRACTION = 0.20


@dataclass(frozen=True)
class DistributionScore:
    """The Depth Distribution Score and its three parts."""

    s_chi2: float
    s_conc: float
    s_range: float
    s_dist: float


@dataclass(frozen=True)
class ScoreRow:
    """Scores of one depth file; NaN scores and a non-empty `error` when it could not be scored."""

    path: str
    s_grad: float
    s_dist: float
    total: float
    s_chi2: float
    s_conc: float
    s_range: float
    valid_fraction: float
    low_valid: bool
    error: str = ""


CSV_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ScoreRow))


def distribution_score(values: np.ndarray, bins: int = BINS) -> DistributionScore:
    """Depth Distribution Score of a non-empty set of depth values (see the module docstring)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    n = v.size
    if n == 0:
        raise ValueError("no values to score")
    if bins <= 4:
        raise ValueError("bins must exceed 4 (the concentration score needs 2/K < 0.5)")
    low, high = float(v.min()), float(v.max())
    try:
        hist = np.histogram(v, bins=bins, range=(low, high))[0].astype(np.float64) if high > low else None
    except ValueError:  # a range too narrow for `bins` distinct float edges: as good as constant
        hist = None
    if hist is None:
        hist = np.zeros(bins)
        hist[0] = n
    expected = n / bins
    chi2 = float(np.sum((hist - expected) ** 2) / expected)
    s_chi2 = math.exp(-chi2 / n)
    peak = float(hist.max()) / n
    floor = 2.0 / bins
    s_conc = 1.0 if peak <= floor else 1.0 - min(1.0, (peak - floor) / (0.5 - floor))
    s_range = float(np.count_nonzero(hist)) / bins
    return DistributionScore(s_chi2, s_conc, s_range, 0.5 * s_chi2 + 0.3 * s_conc + 0.2 * s_range)


def gradient_score(depth: np.ndarray, valid: np.ndarray, edge_fraction: float = EDGE_FRACTION) -> float:
    """Gradient Continuity Score of `depth` over `valid` (see the module docstring)."""
    valid = np.asarray(valid, dtype=bool)
    d = np.where(valid, np.asarray(depth, dtype=np.float64), 0.0)
    gx = cv2.Sobel(d, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(d, cv2.CV_64F, 0, 1, ksize=3)
    interior = cv2.erode(
        valid.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
    ).astype(bool)
    magnitude = np.hypot(gx, gy)[interior] / 8.0
    n = magnitude.size
    if n == 0:
        return math.nan
    n_kept = n - int(edge_fraction * n)
    kept = np.partition(magnitude, n_kept - 1)[:n_kept] if n_kept < n else magnitude
    mean = float(kept.mean())
    if mean <= 0.0:
        return 1.0
    return 1.0 / (1.0 + float(kept.std()) / mean)


def score_array(depth: np.ndarray, mask: np.ndarray | None = None, *, path: str = "") -> ScoreRow:
    """All scores of one depth map; valid = finite, > 0 and (if given) nonzero in `mask`."""
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"{path or 'depth map'}: expected a 2-D depth map, got shape {d.shape}")
    valid = np.isfinite(d) & (d > 0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    fraction = float(valid.mean()) if valid.size else 0.0
    low_valid = fraction < LOW_VALID_FRACTION
    if not valid.any():
        nan = math.nan
        return ScoreRow(path, nan, nan, nan, nan, nan, nan, fraction, low_valid)
    dist = distribution_score(d[valid])
    s_grad = gradient_score(d, valid)
    return ScoreRow(
        path=path,
        s_grad=s_grad,
        s_dist=dist.s_dist,
        total=(s_grad + dist.s_dist) / 2.0,
        s_chi2=dist.s_chi2,
        s_conc=dist.s_conc,
        s_range=dist.s_range,
        valid_fraction=fraction,
        low_valid=low_valid,
    )


def score_file(path: str | Path, depth_scale: float = 1000.0) -> ScoreRow:
    """Scores of one depth file (any format `read_depth` takes; PNG values divided by `depth_scale`)."""
    return score_array(read_depth(path, depth_scale), path=str(path))


def _score_or_error(path: str, depth_scale: float) -> ScoreRow:
    """`score_file`, turning an unusable file into a row with NaN scores and the reason in `error`."""
    try:
        return score_file(path, depth_scale)
    except InputError as exc:
        nan = math.nan
        return ScoreRow(path, nan, nan, nan, nan, nan, nan, 0.0, True, str(exc))


def _pooled(paths: Iterable[str | Path], workers: int, depth_scale: float, limit: int) -> Iterator[ScoreRow]:
    """Rows from a pool of `workers` spawned processes, in input order, with at most `limit` files in flight."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: deque[Future[ScoreRow]] = deque()
    try:
        for path in paths:
            pending.append(pool.submit(_score_or_error, str(path), depth_scale))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def score_folder(
    paths: Iterable[str | Path],
    workers: int = 1,
    progress: Callable[[], None] | None = None,
    *,
    depth_scale: float = 1000.0,
    max_in_flight: int | None = None,
) -> Iterator[ScoreRow]:
    """Score depth files in input order, yielding one row per file as soon as it is ready.

    With `workers` > 1 files are scored in a pool of that many spawned processes (they take a
    moment to start) with at most `max_in_flight` (default 4 × workers) files submitted at a
    time; `paths` is consumed lazily, so memory stays constant however many files there are.
    An unusable file yields a row with `error` set instead of stopping the run. `progress` is
    called once per yielded row.
    """
    if workers > 1:
        limit = max(1, max_in_flight if max_in_flight is not None else 4 * workers)
        rows = _pooled(paths, workers, depth_scale, limit)
    else:
        rows = (_score_or_error(str(path), depth_scale) for path in paths)
    for row in rows:
        if progress is not None:
            progress()
        yield row


def write_score_csv(rows: Iterable[ScoreRow], path: str | Path) -> int:
    """Stream `rows` into a CSV at `path` (columns `CSV_FIELDS`), replacing it atomically at the end; return the row count."""
    count = 0

    def write(temp: Path) -> None:
        nonlocal count
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_FIELDS)
            for row in rows:
                writer.writerow(astuple(row))
                count += 1

    atomic_write(Path(path), write)
    return count


def _read_score_csv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a score CSV as strings; UsageError if it cannot be read or lacks the score columns."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"path", "s_grad", "s_dist"} - set(reader.fieldnames or ())
            if missing:
                raise UsageError(f"{path} is not a score CSV: missing column(s) {', '.join(sorted(missing))}")
            yield from reader
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _bottom(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` lowest scores; ties go to the earlier row."""
    return np.argsort(scores, kind="stable")[:count]


def select_keep(
    rows: str | Path | Iterable[ScoreRow | Mapping[str, object]],
    keep: float,
    *,
    drop_low_valid: bool = True,
) -> list[str]:
    """Paths of the samples to keep, in input order, after dropping the worst on each score.

    `rows` is a score CSV or score rows. Rows with an error or a NaN S_grad/S_dist (and, with
    `drop_low_valid`, flagged rows) are never kept and are not ranked. Of the n ranked rows, the
    round((1 − keep)·n) lowest by S_grad form one bottom set and the same number lowest by S_dist
    another (ties: the earlier row counts as lower); a row is kept only if it is in neither, so
    between n − 2·round((1 − keep)·n) and n − round((1 − keep)·n) rows are kept.
    """
    if not 0.0 < keep <= 1.0:
        raise UsageError(f"keep must be in (0, 1], got {keep}")
    source = _read_score_csv(Path(rows)) if isinstance(rows, (str, Path)) else rows
    paths: list[str] = []
    grad, dist = array("d"), array("d")
    for row in source:
        record: Mapping[str, Any] = row if isinstance(row, Mapping) else {f: getattr(row, f) for f in CSV_FIELDS}
        s_grad, s_dist = float(record["s_grad"]), float(record["s_dist"])
        flagged = str(record.get("low_valid", "False")) == "True"
        if record.get("error") or math.isnan(s_grad) or math.isnan(s_dist) or (drop_low_valid and flagged):
            continue
        paths.append(str(record["path"]))
        grad.append(s_grad)
        dist.append(s_dist)
    drop = round((1.0 - keep) * len(paths))
    dropped = set(_bottom(np.frombuffer(grad), drop).tolist()) | set(_bottom(np.frombuffer(dist), drop).tolist())
    return [p for i, p in enumerate(paths) if i not in dropped]


def plot_score_histograms(csv_path: str | Path, png_path: str | Path, bins: int = 50) -> Path:
    """Histograms of S_grad, S_dist and Total from a score CSV, side by side in one PNG; returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = {"s_grad": array("d"), "s_dist": array("d"), "total": array("d")}
    for row in _read_score_csv(Path(csv_path)):
        for name, values in columns.items():
            value = float(row.get(name) or "nan")
            if not math.isnan(value):
                values.append(value)
    fig = Figure(figsize=(12, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    titles = {"s_grad": "Gradient continuity S_grad", "s_dist": "Depth distribution S_dist", "total": "Total"}
    for i, (name, values) in enumerate(columns.items()):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.hist(np.frombuffer(values) if len(values) else [], bins=bins, range=(0.0, 1.0), color=f"C{i}")
        ax.set_title(f"{titles[name]} (n={len(values)})")
        ax.set_xlabel("score")
    fig.tight_layout()
    out = Path(png_path)
    atomic_write(out, lambda temp: fig.savefig(temp, format="png"))
    return out
