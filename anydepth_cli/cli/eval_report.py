"""What `anydepth eval` and `anydepth score` show: notes and progress on stderr while they run, the score tables on
stdout, then the report files and every sample that failed."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import typer
from rich.markup import escape

from anydepth_cli.cli.console import err, out

if TYPE_CHECKING:
    from rich.progress import Progress

    from anydepth_cli.evaluation.benchmark_run import SetResult
    from anydepth_cli.evaluation.evaluate import Counter
    from anydepth_cli.evaluation.failures import Failure
    from anydepth_cli.evaluation.folder_run import EvalResult
    from anydepth_cli.evaluation.plan import PlannedSet


def counter(bar: Progress, description: str, total: int) -> Callable[[], None]:
    """Add a task of `total` steps to `bar`; return a callback advancing it by one.

    The task gets a sample at its start, so the rate counts from there rather than from the first
    step (steps that finish together would otherwise read as thousands per second).
    """
    task = bar.add_task(description, total=total)
    bar.advance(task, 0)
    return lambda: bar.advance(task)


class EvalProgress:
    """The `evaluation.evaluate.EvalReporter` of the command line: dim notes and progress bars on stderr."""

    def source_read(self, note: str) -> None:
        err.print(f"[dim]{escape(note)}[/]", highlight=False)

    def folder_started(self, samples: int, preset: str) -> None:
        err.print(f"[dim]{samples} sample(s), preset {preset}[/]")

    def set_started(self, planned: PlannedSet) -> None:
        err.print(f"[dim]{planned.benchmark.title}: {len(planned.samples)} sample(s) in "
                  f"{escape(str(planned.files.root))}[/]", highlight=False)

    @contextmanager
    def counting(self, description: str, total: int, tiles: bool = False) -> Iterator[Counter]:
        from anydepth_cli.cli.progress import counting_progress
        from anydepth_cli.evaluation.evaluate import Counter

        with counting_progress("img") as bar:
            tiles_done = tiles_counter(bar) if tiles else None
            yield Counter(counter(bar, description, total), tiles_done)


def tiles_counter(bar: Progress) -> Callable[[str, int, int], None]:
    """Add a hidden task to `bar`; return a callback `(model, done, total)` showing it while an image's tiles run."""
    task = bar.add_task("tiles", total=None, visible=False)

    def tiles_done(model: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, visible=done < total, description=f"tiles ({escape(model)})")

    return tiles_done


def aggregate_table(result: EvalResult) -> None:
    """Print the aggregate metrics on stdout: one row per metric, one column per model, best in bold."""
    from rich.table import Table

    from anydepth_cli.evaluation.metrics import HIGHER_IS_BETTER, METRICS
    from anydepth_cli.evaluation.report import LABELS

    table = Table(title=f"preset {result.preset}")
    table.add_column("metric")
    for model in result.models:
        table.add_column(escape(model), justify="right")
    for metric in METRICS:
        values = [result.aggregates[model][metric] for model in result.models]
        finite = [v for v in values if not math.isnan(v)]
        best = (max if metric in HIGHER_IS_BETTER else min)(finite) if len(finite) > 1 else None
        cells = ["–" if math.isnan(v) else (f"[bold]{v:.4f}[/]" if v == best else f"{v:.4f}") for v in values]
        table.add_row(f"{LABELS[metric]} {'↑' if metric in HIGHER_IS_BETTER else '↓'}", *cells)
    table.add_row("images", *(str(int(result.aggregates[model]["n_images"])) for model in result.models))
    table.add_row("aligned as", *(result.alignments[model].label for model in result.models))
    out.print(table)


def kind_check_table(result: EvalResult) -> None:
    """Print, for the models aligned both ways, the AbsRel of each way and the kind the data supports."""
    from rich.table import Table

    from anydepth_cli.evaluation.report import KIND_CHECK_COLUMNS, kind_check_rows

    rows = kind_check_rows(result)
    if not rows:
        return
    table = Table(title="output kind check")
    for column in KIND_CHECK_COLUMNS:
        table.add_column(column, justify="right" if column.startswith(("AbsRel", "Ratio")) else "left")
    for row in rows:
        table.add_row(*map(escape, row))
    out.print(table)


def benchmark_table(results: list[SetResult], models: list[str]) -> None:
    """Print the scores on stdout: one row per set (its images and time), AbsRel % and δ1 % per model, the
    best of each set in bold; eval_benchmarks.md holds the same in the paper's layout."""
    from rich.table import Table

    from anydepth_cli.evaluation.benchmark_report import table_cells

    _, rows = table_cells(results, models)
    table = Table(title="zero-shot benchmarks (%)")
    table.add_column("set")
    table.add_column("images", justify="right")
    table.add_column("time", justify="right")
    for model in models:
        table.add_column(f"{escape(model)}\nAbsRel ↓", justify="right")
        table.add_column(f"{escape(model)}\nδ1 ↑", justify="right")
    for index, result in enumerate(results):
        cells = [row[1 + 2 * index + k] for row in rows for k in (0, 1)]
        standard = result.benchmark.standard_count
        images = str(result.scored) if result.scored == standard else f"[yellow]{result.scored} of {standard}[/]"
        images += f" ({result.tiled} tiled)" if result.tiled else ""
        speed = (result.scored + len(result.failures)) / result.seconds if result.seconds > 0 else 0.0
        table.add_row(result.benchmark.title, images, f"{result.seconds:.1f} s, {speed:.1f}/s",
                      *(cell.replace("**", "[bold]", 1).replace("**", "[/]", 1) for cell in cells))
    out.print(table)


def print_failures(failures: list[Failure]) -> None:
    """Name each input that failed, and why, on stderr."""
    for failure in failures:
        err.print(f"[red]failed[/] {escape(failure.input)}: {escape(failure.reason)}", highlight=False)


def report_end(written: list[Path], failures: list[Failure]) -> None:
    """Name the report files and every sample that failed; exit 1 when one did."""
    err.print(f"report → {escape(', '.join(str(p) for p in written))}", highlight=False)
    print_failures(failures)
    if failures:
        raise typer.Exit(1)
