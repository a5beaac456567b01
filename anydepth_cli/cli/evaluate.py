"""`anydepth eval`: zero-shot accuracy of depth models against ground truth, on a folder or the standard sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from anydepth_cli.errors import UsageError

if TYPE_CHECKING:
    from anydepth_cli.evaluation.evaluate import Models
    from anydepth_cli.evaluation.plan import EvalOptions
    from anydepth_cli.inference.predictor import BatchedPredictor

DEFAULT_OUTPUT = Path("anydepth-eval")
DATA = "Data"
BENCHMARKS = "Benchmarks"
MODEL = "Model"
OUTPUT = "Output"
RUN = "Running"


@dataclass(frozen=True)
class ModelChoice:
    """A model to run: a registry name, or a checkpoint with its architecture file."""

    model: str | None = None
    checkpoint: str | None = None
    arch: Path | None = None


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
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for eval_per_image.csv and eval_summary.md + eval_abs_rel.png, or with --benchmark eval_benchmarks.md + eval_benchmarks.csv.", rich_help_panel=OUTPUT)] = DEFAULT_OUTPUT,
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
    from anydepth_cli.cli.eval_report import (EvalProgress, aggregate_table, benchmark_table, kind_check_table,
                                              report_end)
    from anydepth_cli.evaluation.evaluate import evaluate_benchmarks, evaluate_folder
    from anydepth_cli.evaluation.plan import EvalOptions, benchmark_plan

    options = EvalOptions(
        output=output, data=data, models=tuple(model or ()), checkpoint=checkpoint, arch=arch, input_size=input_size,
        benchmark=benchmark, data_root=data_root, list_file=list_file, save_predictions=save_predictions, tile=tile,
        preset=preset, depth_scale=depth_scale, device=device, precision=precision, batch_size=batch_size,
        align=align, output_kind=output_kind,
    )
    options.check()
    if options.benchmark is not None:
        plan = benchmark_plan(options)
        sets = evaluate_benchmarks(options, plan, _models(options), EvalProgress())
        benchmark_table(sets.results, sets.models)
        report_end(sets.written, sets.failures)
        return
    folder = evaluate_folder(options, _models(options), EvalProgress())
    aggregate_table(folder.result)
    kind_check_table(folder.result)
    report_end(folder.written, folder.result.failures)


def _model_choices(options: EvalOptions) -> list[ModelChoice]:
    """Each model to run: every --model, then the local checkpoint.

    With neither, the default registry model. Every choice is resolved once here (no download) so a
    bad name or a repeated model is reported before any network is loaded.
    """
    from anydepth_cli.weights.choice import choose_weights

    choices = [ModelChoice(model=name) for name in options.models]
    if options.checkpoint is not None or options.arch is not None:
        choices.append(ModelChoice(checkpoint=options.checkpoint, arch=options.arch))
    if not choices:
        choices.append(ModelChoice())
    seen: set[str] = set()
    for choice in choices:
        label = choose_weights(choice.model, choice.checkpoint, choice.arch).label
        if label in seen:
            raise UsageError(f"model {label!r} is given twice")
        seen.add(label)
    return choices


def _models(options: EvalOptions) -> Models:
    """The models the options choose, checked now and loaded when the evaluation asks, each said on stderr: where it
    runs and what it declares."""
    from rich.markup import escape

    from anydepth_cli.cli.console import err
    from anydepth_cli.evaluation.evaluate import Models
    from anydepth_cli.pipelines.runtime import open_predictor, tile_config

    choices = _model_choices(options)

    def open_all() -> dict[str, BatchedPredictor]:
        predictors = {}
        for choice in choices:
            predictor, label = open_predictor(choice.model, choice.checkpoint, choice.arch, options.device,
                                              options.precision, options.batch_size, options.input_size)
            predictors[label] = predictor
            err.print(f"[dim]{escape(label)} on {predictor.device.type}, declares {predictor.output_kind}[/]")
        return predictors

    return Models(open_all, tile_config)
