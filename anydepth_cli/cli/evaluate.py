"""`anydepth eval` (zero-shot accuracy against ground truth) and `anydepth score` (data quality of depth maps)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Iterable, Iterator, Optional

import typer

from anydepth_cli.cli.console import err, out
from anydepth_cli.errors import UsageError
from anydepth_cli.models.config import space_of

if TYPE_CHECKING:
    from types import ModuleType

    from rich.progress import Progress

    from anydepth_cli.datasets.archive import Sample, SetFiles
    from anydepth_cli.datasets.family import SampleSet
    from anydepth_cli.evaluation.presets import Preset
    from anydepth_cli.evaluation.benchmark_run import SetResult
    from anydepth_cli.inference.predictor import BatchedPredictor

    from anydepth_cli.evaluation.runner import EvalResult
    from anydepth_cli.evaluation.quality import ScoreRow

DEFAULT_EVAL_OUTPUT = Path("anydepth-eval")
DEFAULT_SCORE_OUTPUT = Path("anydepth-score")
SCORES_CSV = "scores.csv"
KEEP_LIST = "keep.txt"
SCORES_PLOT = "scores.png"
MAX_LISTED_ERRORS = 20

DATA = "Data"
BENCHMARKS = "Benchmarks"

Choice = tuple[Optional[str], Optional[str], Optional[Path]]
"""A model to run: registry name, checkpoint, architecture file."""
Running = tuple[str, str, int, Optional[int]]
"""How the models run: device, precision, batch size, input size."""
MODEL = "Model"
OUTPUT = "Output"
RUN = "Running"


def _counter(bar: Progress, description: str, total: int) -> Callable[[], None]:
    """Add a task of `total` steps to `bar`; return a callback advancing it by one.

    The task gets a sample at its start, so the rate counts from there rather than from the first
    step (steps that finish together would otherwise read as thousands per second).
    """
    task = bar.add_task(description, total=total)
    bar.advance(task, 0)
    return lambda: bar.advance(task)


def _check_depth_scale(depth_scale: float | None) -> None:
    """UsageError for a --depth-scale that is given and not positive."""
    if depth_scale is not None and not depth_scale > 0:
        raise UsageError(f"--depth-scale must be positive, got {depth_scale}")


# ----------------------------------------------------------------------------------------------- eval


def _model_choices(models: list[str], checkpoint: str | None, arch: Path | None) -> list[Choice]:
    """`(model, checkpoint, arch)` for each model to run: every --model, then the local checkpoint.

    With neither, the default registry model. Every choice is resolved once here (no download) so a
    bad name or a repeated model is reported before any network is loaded.
    """
    from anydepth_cli.weights.choice import choose_weights

    choices: list[Choice] = [(name, None, None) for name in models]
    if checkpoint is not None or arch is not None:
        choices.append((None, checkpoint, arch))
    if not choices:
        choices.append((None, None, None))
    seen: set[str] = set()
    for choice in choices:
        label = choose_weights(*choice).label
        if label in seen:
            raise UsageError(f"model {label!r} is given twice")
        seen.add(label)
    return choices


def _aggregate_table(result: EvalResult) -> None:
    """Print the aggregate metrics on stdout: one row per metric, one column per model, best in bold."""
    from rich.markup import escape
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


def _kind_check_table(result: EvalResult) -> None:
    """Print, for the models aligned both ways, the AbsRel of each way and the kind the data supports."""
    from rich.markup import escape
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


def _open_predictors(choices: list[Choice], device: str, precision: str, batch_size: int,
                     input_size: int | None) -> dict[str, BatchedPredictor]:
    """Load every chosen model, saying on stderr where each runs and what it declares."""
    from rich.markup import escape

    from anydepth_cli.pipelines.runtime import open_predictor

    predictors = {}
    for choice in choices:
        predictor, label = open_predictor(*choice, device, precision, batch_size, input_size)
        predictors[label] = predictor
        err.print(f"[dim]{escape(label)} on {predictor.device.type}, declares {predictor.output_kind}[/]")
    return predictors


def evaluate(
    data: Annotated[Optional[Path], typer.Argument(help="Folder of image + depth pairs (image/ + depth/ [+ mask/] subfolders, or NAME.jpg beside NAME_depth.png), a list file with `image depth \\[mask]` per line (whitespace- or comma-separated, as `anydepth train` reads it), or DATASET:PATH for one of the training sets' formats as `anydepth train` reads them (hypersim, vkitti, irs, blendedmvs, tartanair). Not with --benchmark.", show_default=False)] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Registry model to evaluate; repeat for several side by side. \\[default: anydepth-dav2-vitb unless --checkpoint]", show_default=False, rich_help_panel=MODEL)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Also evaluate your own .pth/.safetensors weights (a file or hf://ORG/REPO/FILE), labelled by file name.", rich_help_panel=MODEL)] = None,
    arch: Annotated[Optional[Path], typer.Option(help="JSON architecture of --checkpoint. \\[default: that of anydepth-dav2-vitb]", show_default=False, rich_help_panel=MODEL)] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Size the networks see, in pixels: the shorter side for Depth Anything V2's pipeline, the longer for Depth Anything 3's (see `models info`). \\[default: each model's own]", show_default=False, rich_help_panel=MODEL)] = None,
    benchmark: Annotated[Optional[str], typer.Option(help="Score on the standard zero-shot sets instead of DATA, each by its own protocol: nyu, kitti, eth3d, scannet, diode, comma-separated, or all.", metavar="NAME[,NAME...]", show_default=False, rich_help_panel=BENCHMARKS)] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Folder holding the sets as distributed: nyuv2/, kitti/, eth3d/, scannet/ and diode/, each with its standard tar (read in place) or that tar's contents extracted. With a list file as DATA instead, the folder its paths resolve against (foreign absolute paths re-rooted, as `anydepth train --data-root`).", metavar="DIR", show_default=False, rich_help_panel=BENCHMARKS)] = None,
    list_file: Annotated[Optional[Path], typer.Option("--list", help="A standard filename list for the one --benchmark named (`RGB DEPTH [THIRD]` per line, relative to the set). \\[default: every sample with ground truth in the set]", metavar="FILE", show_default=False, rich_help_panel=BENCHMARKS)] = None,
    save_predictions: Annotated[Optional[Path], typer.Option(help="Also save each raw prediction, at the ground truth's size and before alignment, as DIR/<benchmark>/<image path>.npy (DIR/<model>/<benchmark>/… with several models).", metavar="DIR", show_default=False, rich_help_panel=BENCHMARKS)] = None,
    tile: Annotated[str, typer.Option(help="With --benchmark: off (one pass at the model's input size, as the field scores), on, or auto (tiled full-resolution inference for images whose shorter side is over twice the model's input size: ETH3D's).", rich_help_panel=BENCHMARKS)] = "off",
    preset: Annotated[Optional[str], typer.Option(help="Convention for DATA: nyu (Eigen crop, 0.001–10 m), kitti (Garg crop, 0.001–80 m: not the benchmark's Eigen mask) or default (no crop, each image's own depth range). \\[default: default]", show_default=False, rich_help_panel=DATA)] = None,
    depth_scale: Annotated[Optional[float], typer.Option(help="Divisor from 16-bit PNG values to metres for DATA. \\[default: the preset's: 1000, 256 for kitti]", show_default=False, rich_help_panel=DATA)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for eval_per_image.csv and eval_summary.md + eval_abs_rel.png, or with --benchmark eval_benchmarks.md + eval_benchmarks.csv.", rich_help_panel=OUTPUT)] = DEFAULT_EVAL_OUTPUT,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=RUN)] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16 (auto: bf16/fp16 on GPUs; on the CPU bf16 with AMX-BF16 or AVX512-BF16, else fp32).", rich_help_panel=RUN)] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images read and passed to the network at a time.", rich_help_panel=RUN)] = 4,
    align: Annotated[str, typer.Option(help="scale-shift: every prediction aligned by a least-squares scale and shift (the usual); none: metric models are also scored as they are, in metres, in a column of their own beside their aligned scores.", rich_help_panel=MODEL)] = "scale-shift",
    output_kind: Annotated[str, typer.Option(help="Space to align each model in: model (the kind it declares), depth or disparity (for every model), or auto (try both, report which the data supports and score in that one; not with --benchmark).", rich_help_panel=MODEL)] = "model",
) -> None:
    """Score depth models against ground truth: AbsRel, δ1–δ3 and RMSE per image and on average.

    Each prediction is aligned by a least-squares scale and shift over the valid pixels in its model's space (to the ground-truth depth for depth models, to its inverse for disparity models), turned into depth and clipped to the valid range.

    With --benchmark, the paper's zero-shot sets are scored as the field scores them (Marigold's protocol: NYU's Eigen crop, KITTI's benchmark crop and Eigen mask, ETH3D at full resolution, DIODE's masks) and the table is written in the paper's layout.

    Exit status: 0 all scored, 1 some samples could not be scored (each named), 2 usage error.
    """
    from anydepth_cli.evaluation.runner import check_alignment_mode

    check_alignment_mode(output_kind)
    if align not in ("scale-shift", "none"):
        raise UsageError(f"--align must be scale-shift or none, not {align!r}")
    unaligned = align == "none"
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    running = (device, precision, batch_size, input_size)
    if benchmark is not None:
        given = [name for name, value in (("DATA", data), ("--preset", preset), ("--depth-scale", depth_scale))
                 if value is not None]
        if given:
            raise UsageError(f"--benchmark reads the standard sets by their own protocols: drop {', '.join(given)}")
        plan = _benchmark_plan(benchmark, data_root, list_file, tile, output_kind)
        _evaluate_benchmarks(plan, _model_choices(model or [], checkpoint, arch), running, output,
                             save_predictions, tile, output_kind, unaligned)
        return
    given = [name for name, value in (("--list", list_file), ("--save-predictions", save_predictions))
             if value is not None]
    if tile != "off":
        given.append("--tile")
    if given:
        raise UsageError(f"{', '.join(given)}: only with --benchmark")
    if data is None:
        raise UsageError("give DATA (a folder or list file of image/depth pairs, or DATASET:PATH) or --benchmark NAME "
                         "--data-root DIR")
    _evaluate_folder(data, data_root, preset or "default", depth_scale, _model_choices(model or [], checkpoint, arch),
                     running, output, output_kind, unaligned)


def _samples(data: Path, root: Path | None, depth_scale: float | None, preset: Preset) -> SampleSet:
    """The samples DATA names and their reader (generic PNG depth divided by --depth-scale, else the preset's)."""
    from rich.markup import escape

    from anydepth_cli.datasets.registry import GENERIC, default_max_depth, open_source, parse_source

    spec = parse_source(str(data))
    if root is not None and not spec.path.is_file():
        raise UsageError("--data-root: only with --benchmark or a list file as DATA")
    if spec.dataset != GENERIC and depth_scale is not None:
        raise UsageError(f"{spec.dataset} ground truth has its own units: drop --depth-scale")
    opened = open_source(spec, root, preset.depth_scale if depth_scale is None else depth_scale,
                         cap=default_max_depth(spec.dataset))
    if opened.note:
        err.print(f"[dim]{escape(opened.note)}[/]", highlight=False)
    return opened.data


def _evaluate_folder(data: Path, root: Path | None, preset: str, depth_scale: float | None, choices: list[Choice],
                     running: Running, output: Path, output_kind: str, unaligned: bool = False) -> None:
    """`anydepth eval DATA`: the user's own pairs, or a named dataset's, under a preset."""
    from anydepth_cli.evaluation.presets import get_preset
    from anydepth_cli.evaluation.report import write_eval_report
    from anydepth_cli.evaluation.runner import run_eval

    chosen = get_preset(preset)
    _check_depth_scale(depth_scale)
    listed = _samples(data, root, depth_scale, chosen)
    # torch comes in only here, so mistakes in the options and the data are reported at once
    from anydepth_cli.cli.progress import counting_progress
    from anydepth_cli.io.writers import prepare_output_dir

    prepare_output_dir(output)
    predictors = _open_predictors(choices, *running)
    if unaligned:
        from anydepth_cli.evaluation.unaligned import check_some_metric

        check_some_metric(predictors)
    err.print(f"[dim]{len(listed.samples)} sample(s), preset {chosen.name}[/]")
    with counting_progress("img") as bar:
        result = run_eval(listed, predictors, chosen, _counter(bar, "images", len(listed.samples)),
                          batch_size=running[2], output_kind=output_kind, unaligned=unaligned)
    written = write_eval_report(result, output)
    _aggregate_table(result)
    _kind_check_table(result)
    _report_end(written, result.failures)


def _report_end(written: list[Path], failures: list[tuple[str, str]]) -> None:
    """Name the report files and every sample that failed; exit 1 when one did."""
    from rich.markup import escape

    err.print(f"report → {escape(', '.join(str(p) for p in written))}", highlight=False)
    for image, reason in failures:
        err.print(f"[red]failed[/] {escape(image)}: {escape(reason)}", highlight=False)
    if failures:
        raise typer.Exit(1)


def _benchmark_plan(names: str, data_root: Path | None, list_file: Path | None, tile: str,
                    output_kind: str) -> list[tuple[ModuleType, SetFiles, list[Sample]]]:
    """Each named set, its files and the samples to score; every mistake in the options or the data root is
    reported here, before any network is loaded."""
    from anydepth_cli.datasets.archive import locate
    from anydepth_cli.datasets.lists import read_list
    from anydepth_cli.datasets.registry import choose_benchmarks
    from anydepth_cli.evaluation.benchmark_run import TILE_MODES

    sets = choose_benchmarks(names)
    if tile not in TILE_MODES:
        raise UsageError(f"--tile must be one of {', '.join(TILE_MODES)}, not {tile!r}")
    if output_kind == "auto":
        raise UsageError("--output-kind auto does not go with --benchmark: each model is scored in its declared "
                         "space, or in the one --output-kind depth|disparity names")
    if list_file is not None and len(sets) != 1:
        raise UsageError("--list is one set's filename list: name that one set with --benchmark")
    if data_root is None:
        raise UsageError("--benchmark needs --data-root DIR, the folder holding the sets")
    if not data_root.is_dir():
        raise UsageError(f"--data-root {data_root} is not a folder")
    plan = []
    for module in sets:
        files = locate(data_root, module.location)
        samples = read_list(list_file, module).samples if list_file is not None else module.find(files)
        plan.append((module, files, samples))
    return plan


def _evaluate_benchmarks(plan: list[tuple[ModuleType, SetFiles, list[Sample]]], choices: list[Choice],
                         running: Running, output: Path, save_predictions: Path | None, tile: str,
                         output_kind: str, unaligned: bool = False) -> None:
    """`anydepth eval --benchmark`: every model on every planned set, then the paper's table."""
    from rich.markup import escape

    from anydepth_cli.cli.progress import counting_progress
    from anydepth_cli.evaluation.benchmark_report import write_benchmark_report
    from anydepth_cli.evaluation.benchmark_run import RunOptions, SetRun
    from anydepth_cli.io.writers import prepare_output_dir
    from anydepth_cli.pipelines.runtime import tile_config

    prepare_output_dir(output)
    if save_predictions is not None:
        prepare_output_dir(save_predictions)
    predictors = _open_predictors(choices, *running)
    kinds = {label: space_of(p.output_kind) if output_kind == "model" else output_kind for label, p in predictors.items()}
    if unaligned:
        from anydepth_cli.evaluation.unaligned import check_some_metric, with_unaligned

        check_some_metric(predictors)
        predictors, kinds = with_unaligned(predictors, kinds)  # a metric model runs once more, scored as it is
    tiles = {label: tile_config(p) for label, p in predictors.items()} if tile != "off" else {}
    options = RunOptions(kinds, running[2], tile, tiles, save_predictions)
    results = []
    for module, files, samples in plan:
        err.print(f"[dim]{module.title}: {len(samples)} sample(s) in {escape(str(files.root))}[/]", highlight=False)
        with counting_progress("img") as bar:
            tiles_task = bar.add_task("tiles", total=None, visible=False)

            def tiles_done(model: str, done: int, total: int) -> None:
                bar.update(tiles_task, completed=done, total=total, visible=done < total,
                           description=f"tiles ({escape(model)})")

            run = SetRun(module, predictors, options, _counter(bar, module.title, len(samples)), tiles_done)
            results.append(run.run(files, samples))
    written = write_benchmark_report(results, list(predictors), kinds, output)
    _benchmark_table(results, list(predictors))
    _report_end(written, [(f"{r.benchmark.name} {image}", reason) for r in results for image, reason in r.failures])


def _benchmark_table(results: list[SetResult], models: list[str]) -> None:
    """Print the scores on stdout: one row per set (its images and time), AbsRel % and δ1 % per model, the
    best of each set in bold; eval_benchmarks.md holds the same in the paper's layout."""
    from rich.markup import escape
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


# ---------------------------------------------------------------------------------------------- score


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
        self.first_errors: list[tuple[str, str]] = []
        self.sums = {"s_grad": 0.0, "s_dist": 0.0, "total": 0.0}
        self.counts = dict.fromkeys(self.sums, 0)

    def add(self, row: ScoreRow) -> None:
        """Count one row."""
        self.rows += 1
        if row.error:
            self.errors += 1
            if len(self.first_errors) < MAX_LISTED_ERRORS:
                self.first_errors.append((row.path, row.error))
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


def score(
    directory: Annotated[Path, typer.Argument(help="Folder of depth maps (.png, .npy, .pfm, .exr), searched recursively.", show_default=False)],
    depth_scale: Annotated[float, typer.Option(help="Divisor from PNG values to depth (0 = invalid).", rich_help_panel=DATA)] = 1000.0,
    keep: Annotated[Optional[float], typer.Option(help="Also list the samples to keep: drop the lowest (1 − FRACTION) on S_grad and, separately, on S_dist (0.8 drops 20 % on each).", metavar="FRACTION", rich_help_panel=OUTPUT)] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for scores.csv, keep.txt (with --keep) and scores.png.", rich_help_panel=OUTPUT)] = DEFAULT_SCORE_OUTPUT,
    workers: Annotated[Optional[int], typer.Option(help="Processes scoring files in parallel. \\[default: CPU cores]", show_default=False, rich_help_panel=RUN)] = None,
) -> None:
    """Score the quality of depth maps: gradient continuity S_grad, depth distribution S_dist and their mean.

    Files are streamed through a process pool, so memory stays flat however many there are.

    Exit status: 0 all scored, 1 some files could not be read (named), 2 usage error.
    """
    from rich.markup import escape
    from rich.table import Table

    from anydepth_cli.evaluation.quality import plot_score_histograms, score_folder, select_keep, write_score_csv

    _check_depth_scale(depth_scale)
    if keep is not None and not 0.0 < keep <= 1.0:
        raise UsageError(f"--keep must be a fraction in (0, 1], got {keep}")
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a folder")
    total = sum(1 for _ in depth_files(directory, output))
    if not total:
        raise UsageError(f"no depth files (.png, .npy, .pfm, .exr) under {directory}")
    from anydepth_cli.cli.progress import counting_progress
    from anydepth_cli.io.writers import prepare_output_dir, write_lines

    prepare_output_dir(output)
    processes = min(workers or os.cpu_count() or 1, total)
    csv_path, png_path, keep_path = output / SCORES_CSV, output / SCORES_PLOT, output / KEEP_LIST
    err.print(f"[dim]{total} depth file(s), {processes} worker(s)[/]")
    tally = ScoreTally()
    start = time.perf_counter()
    with counting_progress("files") as bar:
        rows = score_folder(depth_files(directory, output), processes, _counter(bar, "files", total),
                            depth_scale=depth_scale)
        write_score_csv(tally.watch(rows), csv_path)
    seconds = time.perf_counter() - start
    plot_score_histograms(csv_path, png_path)

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("scored", f"{tally.rows - tally.errors} file(s) → {escape(str(csv_path))}")
    for name, label in (("s_grad", "S_grad"), ("s_dist", "S_dist"), ("total", "Total")):
        table.add_row(f"mean {label}", f"{tally.mean(name):.4f}")
    if tally.low_valid:
        table.add_row("low valid", f"{tally.low_valid} file(s) under 20 % valid pixels (never kept)")
    if keep is not None:
        kept = select_keep(csv_path, keep)
        write_lines(keep_path, kept)
        table.add_row("kept", f"{len(kept)} of {tally.rows} → {escape(str(keep_path))}")
    table.add_row("histograms", escape(str(png_path)))
    table.add_row("failed", str(tally.errors))
    table.add_row("time", f"{seconds:.1f} s ({tally.rows / max(seconds, 1e-9):.1f} files/s)")
    err.print(table)
    for path, reason in tally.first_errors:
        err.print(f"[red]failed[/] {escape(path)}: {escape(reason)}", highlight=False)
    if tally.errors > len(tally.first_errors):
        err.print(f"[red]… and {tally.errors - len(tally.first_errors)} more[/] (see the error column of {escape(str(csv_path))})")
    if tally.errors:
        raise typer.Exit(1)
