"""`anydepth score`: data quality of depth maps (gradient continuity and depth distribution), and which to keep."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterator, Optional

import typer

from anydepth_cli.cli.console import err

if TYPE_CHECKING:
    from anydepth_cli.evaluation.score_files import ScoreSummary

DEFAULT_OUTPUT = Path("anydepth-score")
DATA = "Data"
OUTPUT = "Output"
RUN = "Running"


def score(
    directory: Annotated[Path, typer.Argument(help="Folder of depth maps (.png, .npy, .pfm, .exr), searched recursively.", show_default=False)],
    depth_scale: Annotated[float, typer.Option(help="Divisor from PNG values to depth (0 = invalid).", rich_help_panel=DATA)] = 1000.0,
    keep: Annotated[Optional[float], typer.Option(help="Also list the samples to keep: drop the lowest (1 − FRACTION) on S_grad and, separately, on S_dist (0.8 drops 20 % on each).", metavar="FRACTION", rich_help_panel=OUTPUT)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for scores.csv, keep.txt (with --keep) and scores.png.", rich_help_panel=OUTPUT)] = DEFAULT_OUTPUT,
    workers: Annotated[Optional[int], typer.Option(help="Processes scoring files in parallel. \\[default: CPU cores]", show_default=False, rich_help_panel=RUN)] = None,
) -> None:
    """Score the quality of depth maps: gradient continuity S_grad, depth distribution S_dist and their mean.

    Files are streamed through a process pool, so memory stays flat however many there are.

    Exit status: 0 all scored, 1 some files could not be read (named), 2 usage error.
    """
    from anydepth_cli.evaluation.score_files import ScoreOptions, score_depth_files

    options = ScoreOptions(directory=directory, output=output, depth_scale=depth_scale, keep=keep, workers=workers)
    options.check()
    summary = score_depth_files(options, ScoreProgress())
    print_summary(summary)
    if summary.tally.errors:
        raise typer.Exit(1)


class ScoreProgress:
    """The `evaluation.score_files.ScoreReporter` of the command line: a note and a progress bar on stderr."""

    def started(self, files: int, processes: int) -> None:
        err.print(f"[dim]{files} depth file(s), {processes} worker(s)[/]")

    @contextmanager
    def counting(self, total: int) -> Iterator[Callable[[], None]]:
        from anydepth_cli.cli.eval_report import counter
        from anydepth_cli.cli.progress import counting_progress

        with counting_progress("files") as bar:
            yield counter(bar, "files", total)


def print_summary(summary: ScoreSummary) -> None:
    """Files scored, mean scores, files kept, where each output went, failures and time, as a table on stderr;
    then the first files that could not be read."""
    from rich.markup import escape
    from rich.table import Table

    from anydepth_cli.cli.eval_report import print_failures

    tally, seconds = summary.tally, summary.seconds
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("scored", f"{tally.rows - tally.errors} file(s) → {escape(str(summary.csv_path))}")
    for name, label in (("s_grad", "S_grad"), ("s_dist", "S_dist"), ("total", "Total")):
        table.add_row(f"mean {label}", f"{tally.mean(name):.4f}")
    if tally.low_valid:
        table.add_row("low valid", f"{tally.low_valid} file(s) under 20 % valid pixels (never kept)")
    if summary.kept is not None:
        table.add_row("kept", f"{summary.kept} of {tally.rows} → {escape(str(summary.keep_path))}")
    table.add_row("histograms", escape(str(summary.plot_path)))
    table.add_row("failed", str(tally.errors))
    table.add_row("time", f"{seconds:.1f} s ({tally.rows / max(seconds, 1e-9):.1f} files/s)")
    err.print(table)
    print_failures(tally.first_errors)
    if tally.errors > len(tally.first_errors):
        err.print(f"[red]… and {tally.errors - len(tally.first_errors)} more[/] (see the error column of "
                  f"{escape(str(summary.csv_path))})")
