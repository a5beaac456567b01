"""`anydepth eval` below the command line: the chosen models (loaded by the command line, which chooses the weights)
scoring a folder or the planned standard sets, and the report written; an EvalReporter tells the user as it goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Protocol

from anydepth_cli.evaluation.failures import Failure
from anydepth_cli.evaluation.plan import EvalOptions, PlannedSet, folder_samples
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.models.config import space_of

if TYPE_CHECKING:
    from anydepth_cli.evaluation.benchmark_run import SetResult
    from anydepth_cli.evaluation.folder_run import EvalResult
    from anydepth_cli.inference.predictor import BatchedPredictor
    from anydepth_cli.inference.tiling import TileConfig


@dataclass(frozen=True)
class Counter:
    """Callbacks of a progress count: one image done; and, where images are tiled, `(model, tiles done, total)`."""

    advance: Callable[[], None]
    tiles: Callable[[str, int, int], None] | None = None


class EvalReporter(Protocol):
    """What an evaluation tells its user as it goes."""

    def source_read(self, note: str) -> None:
        """What the data source says about how it was read."""

    def folder_started(self, samples: int, preset: str) -> None:
        """The folder's samples are about to be scored under `preset`."""

    def set_started(self, planned: PlannedSet) -> None:
        """A standard set is about to be scored."""

    def counting(self, description: str, total: int, tiles: bool = False) -> ContextManager[Counter]:
        """A count of `total` images while they are scored; with `tiles`, also of the tiles of tiled ones."""


@dataclass(frozen=True)
class Models:
    """The chosen models: `open()` loads them, each under its label; `tile_config(predictor)` is a loaded one's tile
    geometry."""

    open: Callable[[], dict[str, BatchedPredictor]]
    tile_config: Callable[[BatchedPredictor], TileConfig]


@dataclass(frozen=True)
class FolderEvaluation:
    """The scores of a folder's (or list's, or dataset's) samples and the report files written."""

    result: EvalResult
    written: list[Path]


@dataclass(frozen=True)
class BenchmarkEvaluation:
    """The scores on each standard set, the models (labels) scored and the report files written."""

    results: list[SetResult]
    models: list[str]
    written: list[Path]

    @property
    def failures(self) -> list[Failure]:
        """Every sample left out, named by its set and image."""
        return [Failure(f"{r.benchmark.NAME} {failure.input}", failure.reason)
                for r in self.results for failure in r.failures]


def evaluate_folder(options: EvalOptions, models: Models, reporter: EvalReporter) -> FolderEvaluation:
    """`anydepth eval DATA`: the user's own pairs, or a named dataset's, under a preset."""
    from anydepth_cli.evaluation.folder_run import run_eval
    from anydepth_cli.evaluation.report import write_eval_report

    chosen = get_preset(options.preset or "default")
    data = folder_samples(options.data, options.data_root, options.depth_scale or chosen.depth_scale,
                          options.depth_scale is not None, reporter.source_read)
    # torch comes in only here, so mistakes in the options and the data are reported at once
    from anydepth_cli.io.writers import prepare_output_dir

    prepare_output_dir(options.output)
    predictors = models.open()
    if options.unaligned:
        from anydepth_cli.evaluation.unaligned import check_some_metric

        check_some_metric(predictors)
    reporter.folder_started(len(data), chosen.name)
    with reporter.counting("images", len(data)) as counter:
        result = run_eval(data, predictors, chosen, counter.advance, batch_size=options.batch_size,
                          output_kind=options.output_kind, unaligned=options.unaligned)
    return FolderEvaluation(result, write_eval_report(result, options.output))


def evaluate_benchmarks(options: EvalOptions, plan: list[PlannedSet], models: Models,
                        reporter: EvalReporter) -> BenchmarkEvaluation:
    """`anydepth eval --benchmark`: every model on every planned set, then the paper's table."""
    from anydepth_cli.evaluation.benchmark_report import write_benchmark_report
    from anydepth_cli.evaluation.benchmark_run import RunOptions, SetRun
    from anydepth_cli.io.writers import prepare_output_dir

    prepare_output_dir(options.output)
    if options.save_predictions is not None:
        prepare_output_dir(options.save_predictions)
    predictors = models.open()
    kinds = {label: space_of(p.output_kind) if options.output_kind == "model" else options.output_kind
             for label, p in predictors.items()}
    if options.unaligned:
        from anydepth_cli.evaluation.unaligned import check_some_metric, with_unaligned

        check_some_metric(predictors)
        predictors, kinds = with_unaligned(predictors, kinds)  # a metric model runs once more, scored as it is
    tiles = {label: models.tile_config(p) for label, p in predictors.items()} if options.tile != "off" else {}
    run_options = RunOptions(kinds, options.batch_size, options.tile, tiles, options.save_predictions)
    results = []
    for planned in plan:
        reporter.set_started(planned)
        with reporter.counting(planned.benchmark.title, len(planned.samples), tiles=True) as counter:
            run = SetRun(planned.benchmark, predictors, run_options, counter.advance, counter.tiles)
            results.append(run.run(planned.files, planned.samples))
    written = write_benchmark_report(results, list(predictors), kinds, options.output)
    return BenchmarkEvaluation(results, list(predictors), written)
