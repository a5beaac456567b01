"""Rich progress for image and video runs, the line naming their inputs and the summaries printed after them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from anydepth_cli.cli.console import err

from anydepth_cli.training.report import Reporter

if TYPE_CHECKING:
    from anydepth_cli.io.images import InputItem
    from anydepth_cli.pipelines.photos import Summary
    from anydepth_cli.pipelines.shards import Shard
    from anydepth_cli.pipelines.video import ClipsSummary, VideoSummary
    from anydepth_cli.training.sources import DataReport, Source
    from anydepth_cli.training.report import TrainSummary


class RateColumn(ProgressColumn):
    """Items per second, with the unit named."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"– {self.unit}/s", style="progress.data.speed")


def counting_progress(unit: str) -> Progress:
    """A stderr progress bar counting `unit`s, with their rate and the time left."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(unit), TimeRemainingColumn(), console=err, transient=False)


class ImageProgress:
    """A progress bar over images (images/s, ETA) with a second bar over the tiles of a tiled image."""

    def __init__(self, total: int) -> None:
        self.progress = counting_progress("img")
        self.task = self.progress.add_task("images", total=total)
        self.tile_task = None

    def __enter__(self) -> "ImageProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def image_done(self, item: InputItem, error: str | None) -> None:
        self.progress.advance(self.task)

    def tiles(self, item: InputItem, done: int, total: int) -> None:
        if self.tile_task is None:
            self.tile_task = self.progress.add_task("tiles", total=total)
        self.progress.update(self.tile_task, completed=done, total=total,
                             description=f"tiles of {escape(item.relative.name)}", visible=done < total)


def print_summary(photos: Summary, clips: ClipsSummary, output: Path, other_files: int,
                  cleaned: int | None) -> None:
    """A short table over photos and clips: written, skipped, failed, time; then one line per clip written,
    and the failures, one per line. `cleaned`: temp files of killed runs removed (None: left alone)."""
    written = [f"{photos.written} image(s)"] if photos.written or not clips.written else []
    if clips.written:
        written.append(f"{len(clips.written)} video(s) ({sum(clip.frames for clip in clips.written)} frames)")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("written", f"{', '.join(written)} → {escape(str(output))}")
    if photos.tiled:
        table.add_row("tiled", f"{photos.tiled} image(s)")
    if photos.skipped or clips.skipped:
        table.add_row("skipped", f"{photos.skipped + clips.skipped} already done (--skip-existing)")
    if other_files:
        table.add_row("ignored", f"{other_files} other file(s)")
    if cleaned:
        table.add_row("cleaned", f"{cleaned} temporary file(s) left by an interrupted run")
    table.add_row("failed", f"{len(photos.failed) + len(clips.failed)}")
    table.add_row("time", f"{photos.seconds + clips.seconds:.1f} s")
    err.print(table)
    if cleaned is None:
        err.print(f"[dim]temporary files in {escape(str(output))} left alone: another run may be writing there[/]")
    for note in photos.notes:
        err.print(f"[dim]{escape(note)}[/]", highlight=False)
    for clip in clips.written:
        err.print(f"[dim]{escape(describe_clip(clip))}[/]", highlight=False, soft_wrap=True)
    for path, reason in photos.failed + clips.failed:
        err.print(f"[red]failed[/] {escape(str(path))}: {escape(reason)}", highlight=False, soft_wrap=True)


def describe_clip(summary: VideoSummary) -> str:
    """One line for a clip written: its frames, size and rate, speed, and its outputs."""
    width, height = summary.size
    speed = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    return (f"{summary.video.name}: {summary.frames} frame(s), {width}x{height} at {summary.fps:.3g} fps"
            + (" (tiled)" if summary.tiled else "") + f", {speed:.2f} frames/s → "
            + ", ".join(str(path) for path in summary.outputs.values()))


class VideoProgress:
    """One progress bar per clip, over its frames (frames/s, ETA), each left on its own line when done;
    clips skipped or failed get a line saying so, and warnings are printed above the bars."""

    def __init__(self) -> None:
        self.progress = counting_progress("frames")
        self.task = None

    def __enter__(self) -> "VideoProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def started(self, video: Path, total: int | None) -> None:
        self.task = self.progress.add_task(f"frames of {escape(str(video))}", total=total)

    def frames_done(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def warn(self, message: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def clip_skipped(self, relative: Path) -> None:
        self.progress.console.print(f"[dim]{escape(str(relative))}: skipped, its outputs exist[/]", highlight=False)

    def clip_failed(self, relative: Path, reason: str) -> None:
        self.progress.console.print(f"[red]failed[/] {escape(str(relative))}: {escape(reason)}", highlight=False,
                                    soft_wrap=True)


SHOWN_SKIPPED = 10
"""Unreadable samples the training summary names; the run folder lists them all."""


def _counts(data: DataReport | Source, kept: str = "") -> str:
    """'K of N sample(s)`kept`' with what was left out and why."""
    parts = [f"{len(data.samples)} of {data.found} sample(s){kept}"]
    if data.no_valid:
        parts.append(f"{len(data.no_valid)} without a valid pixel")
    if data.unreadable:
        parts.append(f"{len(data.unreadable)} unreadable")
    if data.dropped:
        parts.append(f"{len(data.dropped)} dropped by --keep")
    return ", ".join(parts)


class TrainProgress(Reporter):
    """The training run on stderr: a bar over the data check, then one over the steps (loss, lr, img/s, ETA)."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None

    def _bar(self, *columns: ProgressColumn) -> Progress:
        self.stop()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 *columns, TimeRemainingColumn(), console=err, transient=False)
        self.progress.start()
        return self.progress

    def note(self, message: str) -> None:
        (self.progress.console if self.progress else err).print(f"[dim]{escape(message)}[/]", highlight=False)

    def scanning(self, total: int) -> None:
        self.task = self._bar(RateColumn("samples")).add_task("checking data", total=total)

    def scanned(self) -> None:
        self.progress.advance(self.task)

    def data(self, report: DataReport) -> None:
        self.stop()
        lines = [_counts(report, " to train on")]
        if len(report.sources) > 1:
            lines += [f"  {source.label}: {_counts(source)}" for source in report.sources]
        probabilities = report.probabilities()
        if len(probabilities) > 1:
            how = "--mix" if report.weights is not None else "in proportion to their sizes"
            lines.append(f"datasets drawn {how}: " + ", ".join(f"{name} {p:.1%}" for name, p in probabilities.items()))
        for line in lines:
            err.print(f"[dim]{escape(line)}[/]", highlight=False)

    def start(self, total: int, done: int, images_per_step: int) -> None:
        bar = self._bar(TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
                        TextColumn("{task.fields[speed]:.1f} img/s", style="progress.data.speed"))
        self.task = bar.add_task("steps", total=total, completed=done, loss=float("nan"), lr=0.0, speed=0.0)

    def step(self, step: int, loss: float, lr: float, images_per_second: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, lr=lr, speed=images_per_second)

    def validated(self, step: int, abs_rel: float, delta1: float) -> None:
        self.progress.console.print(f"step {step}: val AbsRel {abs_rel:.4f}, δ1 {delta1:.4f}", highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def print_train_summary(summary: TrainSummary) -> None:
    """Steps, time and speed, the final loss, the best validation, where the files are; then unreadable samples."""
    from anydepth_cli.training import run

    table = Table(show_header=False, box=None, pad_edge=False)
    resumed = f" (resumed at {summary.start_step})" if summary.start_step else ""
    table.add_row("trained", f"{summary.start_step + summary.steps} of {summary.total_steps} step(s){resumed}")
    speed = summary.images / summary.seconds if summary.seconds > 0 else 0.0
    table.add_row("time", f"{summary.seconds:.1f} s ({speed:.1f} img/s)")
    table.add_row("final loss", f"{summary.final_loss:.4f}")
    if summary.best_val is not None:
        step, abs_rel, delta1 = summary.best_val
        table.add_row("best val", f"AbsRel {abs_rel:.4f}, δ1 {delta1:.4f} at step {step}")
    folder = summary.output
    table.add_row("model", escape(f"{folder / run.MODEL} with --arch {folder / run.ARCH}"))
    table.add_row("resume", escape(f"{folder / run.LAST} (--resume {folder})"))
    table.add_row("curves", escape(f"{folder / run.METRICS}, {folder / run.PLOT}"))
    if summary.data.dropped:
        table.add_row("dropped", escape(f"{len(summary.data.dropped)} by --keep, listed in {folder / run.DROPPED}"))
    unreadable = summary.data.unreadable
    skipped = len(summary.data.no_valid) + len(unreadable) + len(summary.read_failures)
    table.add_row("skipped", f"{len(summary.data.no_valid)} without a valid pixel, "
                  f"{len(unreadable) + len(summary.read_failures)} unreadable" if skipped else "0")
    err.print(table)
    for path, reason in unreadable[:SHOWN_SKIPPED]:
        err.print(f"[red]skipped[/] {escape(path)}: {escape(reason)}", highlight=False)
    if len(unreadable) > SHOWN_SKIPPED:
        err.print(escape(f"… and {len(unreadable) - SHOWN_SKIPPED} more, all listed in {folder / run.SKIPPED}"))
    for reason in summary.read_failures:
        err.print(f"[red]skipped[/] {escape(reason)}", highlight=False)


def describe_inputs(photos: int, clips: int, found: int, other_files: int, share: Shard | None) -> str:
    """`3 image(s) and 2 video(s) (shard 0-of-2 of 9, from --shard), 1 other file(s) skipped`."""
    text = " and ".join(([f"{photos} image(s)"] if photos else []) + ([f"{clips} video(s)"] if clips else []))
    if share is not None:
        text += f" (shard {share.name} of {found}, from {share.source})"
    return text + (f", {other_files} other file(s) skipped" if other_files else "")
