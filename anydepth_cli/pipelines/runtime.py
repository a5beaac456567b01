"""From command-line choices to a ready predictor (weights or an exported model, backend, device, precision; or a
relative model anchored to a metric one) and its tile geometry, and the checks of the metric options against it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from anydepth_cli.errors import UsageError
from anydepth_cli.weights.choice import WeightsChoice, choose_weights, weights_path

if TYPE_CHECKING:
    from anydepth_cli.inference.onnx_backend import OnnxPredictor
    from anydepth_cli.inference.predictor import BatchedPredictor
    from anydepth_cli.inference.tiling import TileConfig
    from anydepth_cli.pipelines.anchored import AnchoredPredictor

BACKENDS = ("auto", "torch", "onnxruntime")


def open_predictor(model: str | None, checkpoint: str | None, arch: Path | None, device: str = "auto",
                   precision: str = "auto", batch_size: int = 4, input_size: int | None = None,
                   local_rank: int | None = None, backend: str = "auto",
                   onnx: Path | None = None) -> tuple[BatchedPredictor, str]:
    """A predictor and a label naming it: PyTorch for the chosen weights (downloaded if needed), or ONNX Runtime
    for an exported model (`onnx`); `local_rank` picks a launched process's own GPU.

    `backend="auto"` runs PyTorch unless `onnx` is given: then ONNX Runtime when the export is the only model
    given, or when it was timed faster than PyTorch on this CPU when it was exported (`exported_if_faster`).
    On the CPU the process keeps the memory it frees for reuse (`keep_freed_memory`). The weights are found
    first, before torch is imported, so that weights which cannot be had (the Hub unreachable, nothing cached)
    are reported within a second.
    """
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
    only_export = onnx is not None and not any((model, checkpoint, arch))
    if backend == "onnxruntime" or (backend == "auto" and only_export):
        return open_onnx_predictor(onnx, model, checkpoint, arch, device, precision, batch_size, input_size)
    if onnx is not None and backend == "torch":
        raise UsageError("--onnx runs with --backend onnxruntime or auto")
    choice = choose_weights(model, checkpoint, arch)
    weights = weights_path(choice)
    note = ""
    if onnx is not None:
        exported, note = exported_if_faster(onnx, choice, device, precision, batch_size, input_size, local_rank)
        if exported is not None:
            return exported, f"{choice.label} via ONNX Runtime ({Path(onnx).name}, {exported.provider}){note}"
    from anydepth_cli.inference.memory import (hold_large_encoder_in, keep_freed_memory, require_weights_memory,
                                               weights_note)
    from anydepth_cli.inference.precision import select_dtype
    from anydepth_cli.inference.predictor import DepthPredictor, select_device
    from anydepth_cli.models.fuse import prepare_for_inference
    from anydepth_cli.weights.checkpoint import load_network

    target = select_device(device, local_rank)
    dtype = select_dtype(precision, target)
    if target.type == "cpu":
        keep_freed_memory()
    require_weights_memory(choice.config)
    network = load_network(choice.config, weights, target)
    note += weights_note(network)
    network = prepare_for_inference(network, dtype)
    hold_large_encoder_in(network, target, dtype)
    predictor = DepthPredictor(network, input_size or choice.input_size, target, dtype, batch_size)
    return predictor, choice.label + note


def exported_if_faster(onnx: Path, choice: WeightsChoice, device: str, precision: str, batch_size: int,
                       input_size: int | None, local_rank: int | None) -> tuple[OnnxPredictor | None, str]:
    """For `--backend auto` with both weights and their export: the ONNX Runtime predictor when the run is on the
    CPU in float32 and the export's timing, taken on this CPU, has ONNX Runtime faster by FASTER_BY; else None
    (PyTorch runs). With a note saying why, for the label."""
    from anydepth_cli.inference.predictor import select_device

    if select_device(device, local_rank).type != "cpu":
        return None, " (auto: PyTorch on the GPU)"
    if precision not in ("auto", "fp32"):
        return None, f" (auto: PyTorch for --precision {precision})"
    from anydepth_cli.inference.onnx_backend import OnnxPredictor

    predictor = OnnxPredictor(onnx, input_size, "cpu", batch_size)
    card, timing = predictor.card, predictor.cpu_timing
    if card.model != choice.label:
        raise UsageError(f"--onnx {Path(onnx).name} is an export of {card.model}, not of {choice.label}")
    if card.architecture != choice.config.to_dict():
        raise UsageError(f"--onnx {Path(onnx).name} is an export of {card.model} in another architecture")
    if timing is None or not timing.from_here():
        return None, f" (auto: PyTorch; {Path(onnx).name} was not timed on this CPU)"
    if timing.onnxruntime_faster():
        return predictor, f" (auto: {timing.describe()} on this CPU at export)"
    return None, f" (auto: PyTorch; {timing.describe()} on this CPU at export)"


def open_onnx_predictor(onnx: Path | None, model: str | None, checkpoint: str | None, arch: Path | None,
                        device: str, precision: str, batch_size: int,
                        input_size: int | None) -> tuple[BatchedPredictor, str]:
    """The ONNX Runtime predictor of `--onnx FILE` (which holds the weights) and a label naming its model and provider."""
    if onnx is None:
        raise UsageError("--backend onnxruntime needs --onnx FILE (made by `anydepth export`)")
    given = [name for name, value in (("--model", model), ("--checkpoint", checkpoint), ("--arch", arch)) if value]
    if given:
        raise UsageError(f"--onnx holds the weights: drop {', '.join(given)}")
    if precision not in ("auto", "fp32"):
        raise UsageError("--backend onnxruntime runs the exported float32 model: use --precision auto or fp32")
    from anydepth_cli.inference.onnx_backend import OnnxPredictor

    predictor = OnnxPredictor(onnx, input_size, device, batch_size)
    return predictor, f"{predictor.card.model} via ONNX Runtime ({Path(onnx).name}, {predictor.provider})"


def tile_config(predictor: BatchedPredictor, tile_size: int | None = None, overlap: int | None = None) -> TileConfig:
    """Tile geometry for `predictor`: the defaults of `default_tile_config`, tiles batched like images on GPUs
    and at most CPU_TILE_BATCH to a batch on the CPU (where each tile's activations are large)."""
    from anydepth_cli.inference.tiling import CPU_TILE_BATCH, default_tile_config

    batch = predictor.batch_size if predictor.device.type != "cpu" else min(predictor.batch_size, CPU_TILE_BATCH)
    return default_tile_config(predictor.input_size, batch, tile_size, overlap)


def anchored_predictor(relative: BatchedPredictor, label: str, metric_from: str, metric_arch: Path | None,
                       device: str, precision: str, batch_size: int,
                       local_rank: int | None) -> tuple[AnchoredPredictor, str]:
    """`--metric-from MODEL` (a registry name, or a checkpoint with `--metric-arch`): the relative predictor anchored
    to that metric model, and its label."""
    from anydepth_cli.pipelines.anchored import AnchoredPredictor

    model, checkpoint = (None, metric_from) if metric_arch is not None else (metric_from, None)
    metric, metric_label = open_predictor(model, checkpoint, metric_arch, device, precision, batch_size, None,
                                          local_rank)
    return AnchoredPredictor(relative, metric), f"{label} anchored to {metric_label}"


METRIC_MODELS_HINT = "dav2-metric-hypersim-vitl (indoor) or dav2-metric-vkitti-vitl (outdoor)"


def check_metric_options(kind: str, label: str, insist: bool, cloud_scale: tuple | bool) -> None:
    """Refuse a claim of metres from a relative model (`--metric`), and scene-scale options for metric clouds."""
    if insist and kind != "metric":
        raise UsageError(f"{label} gives relative depth, not metres: add --metric-from {METRIC_MODELS_HINT}, "
                         "or run a dav2-metric-* model")
    if kind == "metric" and cloud_scale and any(value is not None for value in cloud_scale):
        raise UsageError("the maps are in metres: the cloud needs no --near, --far or --depth-at")
