"""`anydepth score` below the command line: the depth files of a folder scored for data quality (`quality`), the
scores streamed to a CSV and tallied, their histograms plotted and, when asked, the samples to keep listed."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterable, Iterator, Protocol

from anydepth_cli.errors import UsageError
from anydepth_cli.evaluation.failures import Failure
from anydepth_cli.evaluation.presets import check_depth_scale

if TYPE_CHECKING:
    from anydepth_cli.evaluation.quality import ScoreRow

SCORES_CSV = "scores.csv"
KEEP_LIST = "keep.txt"
SCORES_PLOT = "scores.png"
MAX_LISTED_ERRORS = 20


@dataclass(frozen=True)
class ScoreOptions:
    """What `anydepth score` was asked to do (the command-line options)."""

    directory: Path
    output: Path
    depth_scale: float = 1000.0
    keep: float | None = None
    """Also list the samples to keep: the fraction kept on each score."""
    workers: int | None = None
    """Processes scoring files (None: the CPU cores)."""

    def check(self) -> None:
        """UsageError for the first option out of range, or a DIRECTORY that is no folder."""
        check_depth_scale(self.depth_scale)
        if self.keep is not None and not 0.0 < self.keep <= 1.0:
            raise UsageError(f"--keep must be a fraction in (0, 1], got {self.keep}")
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if not self.directory.is_dir():
            raise UsageError(f"{self.directory} is not a folder")


def depth_files(root: Path, skip: Path | None = None) -> Iterator[Path]:
    """Depth files (.png, .npy, .pfm, .exr) under `root`, recursively, sorted per folder, lazily.

    The folder `skip` (the output folder when it lies inside `root`) is not entered.
    """
    from anydepth_cli.datasets.generic import DEPTH_SUFFIXES

    skipped = skip.resolve() if skip is not None else None
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if Path(folder, d).resolve() != skipped)
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in DEPTH_SUFFIXES:
                yield Path(folder, name)


class ScoreTally:
    """Running totals over streamed score rows: counts, score sums and the first unreadable files."""

    def __init__(self) -> None:
        self.rows = 0
        self.low_valid = 0
        self.errors = 0
        self.first_errors: list[Failure] = []
        self.sums = {"s_grad": 0.0, "s_dist": 0.0, "total": 0.0}
        self.counts = dict.fromkeys(self.sums, 0)

    def add(self, row: ScoreRow) -> None:
        """Count one row."""
        self.rows += 1
        if row.error:
            self.errors += 1
            if len(self.first_errors) < MAX_LISTED_ERRORS:
                self.first_errors.append(Failure(row.path, row.error))
            return
        self.low_valid += row.low_valid
        for name in self.sums:
            value = getattr(row, name)
            if not math.isnan(value):
                self.sums[name] += value
                self.counts[name] += 1

    def mean(self, name: str) -> float:
        """Mean of score `name` over the rows where it is defined (NaN if none)."""
        return self.sums[name] / self.counts[name] if self.counts[name] else math.nan

    def watch(self, rows: Iterable[ScoreRow]) -> Iterator[ScoreRow]:
        """Pass `rows` through, counting each."""
        for row in rows:
            self.add(row)
            yield row


class ScoreReporter(Protocol):
    """What scoring tells its user as it goes."""

    def started(self, files: int, processes: int) -> None:
        """`files` depth files are about to be scored by `processes` processes."""

    def counting(self, total: int) -> ContextManager[Callable[[], None]]:
        """A count of `total` files while they are scored: the callback counts one."""


@dataclass(frozen=True)
class ScoreSummary:
    """The tally of a scoring run, its time and the files written (`kept`: the samples listed, with --keep)."""

    tally: ScoreTally
    seconds: float
    csv_path: Path
    plot_path: Path
    keep_path: Path
    kept: int | None = None


def score_depth_files(options: ScoreOptions, reporter: ScoreReporter) -> ScoreSummary:
    """Score every depth file under the options' DIRECTORY into scores.csv, plot scores.png and, with --keep, list
    the samples to keep in keep.txt; UsageError when there is no depth file."""
    from anydepth_cli.evaluation.quality import plot_score_histograms, score_folder, select_keep, write_score_csv

    directory, output = options.directory, options.output
    total = sum(1 for _ in depth_files(directory, output))
    if not total:
        raise UsageError(f"no depth files (.png, .npy, .pfm, .exr) under {directory}")
    from anydepth_cli.io.writers import prepare_output_dir, write_lines

    prepare_output_dir(output)
    processes = min(options.workers or os.cpu_count() or 1, total)
    csv_path, png_path, keep_path = output / SCORES_CSV, output / SCORES_PLOT, output / KEEP_LIST
    reporter.started(total, processes)
    tally = ScoreTally()
    start = time.perf_counter()
    with reporter.counting(total) as advance:
        rows = score_folder(depth_files(directory, output), processes, advance, depth_scale=options.depth_scale)
        write_score_csv(tally.watch(rows), csv_path)
    seconds = time.perf_counter() - start
    plot_score_histograms(csv_path, png_path)
    kept = None
    if options.keep is not None:
        listed = select_keep(csv_path, options.keep)
        write_lines(keep_path, listed)
        kept = len(listed)
    return ScoreSummary(tally, seconds, csv_path, png_path, keep_path, kept)
