"""ONNX export: a network → one .onnx file with dynamic batch, height and width, its model card in the metadata,
checked by `onnx.checker` and by ONNX Runtime against PyTorch before it is put in place."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from anydepth_cli.errors import ExportError, MissingExtraError
from anydepth_cli.inference.memory import keep_freed_memory
from anydepth_cli.inference.model_card import ModelCard
from anydepth_cli.inference.onnx_backend import TIMING_KEY, CpuTiming, OnnxPredictor, cpu_name
from anydepth_cli.inference.preprocess import network_size
from anydepth_cli.io.writers import atomic_write
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.weights.checkpoint import load_network
from anydepth_cli.weights.choice import choose_weights, weights_path

OPSET = 18
INPUT_NAME = "image"
SAMPLE_GRID = (9, 11)
"""Patch grid of the traced input: unequal odd sides, not the trained 37×37, so that no size is baked in."""
SINGLE_FILE_LIMIT = 2_000_000_000
"""Weights larger than this (bytes; protobuf's 2 GB limit) go to NAME.onnx.data beside the model."""
TOLERANCE = 1e-3
"""Largest |ONNX Runtime − PyTorch| accepted, relative to the output's largest magnitude (at least 1)."""
TIMING_RUNS = 3


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote and how closely ONNX Runtime reproduced PyTorch on a check input."""

    path: Path
    card: ModelCard
    size_bytes: int
    external_data: Path | None
    check_shape: tuple[int, int]
    max_difference: float
    timing: CpuTiming
    """Both backends timed on this CPU, as recorded in the file for `predict --backend auto`."""
    seconds: float


def require_exporter() -> None:
    """Fail with a one-line install hint unless onnx, onnxscript and onnxruntime are importable."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise MissingExtraError(module) from None


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, warnings and log records (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def trace(network: DepthNetwork) -> "torch.onnx.ONNXProgram":
    """The network as an ONNX program (opset OPSET): input `image` B×3×H×W, output B×1×H'×W' named for its kind,
    with B and H, W (multiples of the patch size) dynamic."""
    patch = network.config.patch_size
    sample = torch.randn(2, 3, SAMPLE_GRID[0] * patch, SAMPLE_GRID[1] * patch)
    dims = torch.export.Dim
    shapes = ({0: dims("batch", min=1), 2: patch * dims("h", min=1), 3: patch * dims("w", min=1)},)
    try:
        with quiet_exporter(), torch.no_grad():
            return torch.onnx.export(network, (sample,), dynamo=True, input_names=[INPUT_NAME],
                                     output_names=[network.config.output], dynamic_shapes=shapes,
                                     opset_version=OPSET, verbose=False)
    except Exception as exc:  # torch.export and the ONNX translation raise many unrelated types
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise ExportError(f"torch.onnx.export failed: {lines[-1] if lines else type(exc).__name__}") from None


def check_with_onnxruntime(predictor: OnnxPredictor, network: DepthNetwork, shape: tuple[int, int]) -> float:
    """max |ONNX Runtime − PyTorch| on a random input of `shape`, relative to the output's largest magnitude."""
    sample = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = network(sample)
    output = predictor.run(sample)
    if output.shape != expected.shape:
        raise ExportError(f"the exported model gives shape {tuple(output.shape)}, PyTorch {tuple(expected.shape)}")
    return float((output - expected).abs().max() / max(float(expected.abs().max()), 1.0))


def time_backends(predictor: OnnxPredictor, network: DepthNetwork, shape: tuple[int, int]) -> CpuTiming:
    """Median seconds per call of PyTorch's fast path and of ONNX Runtime on one image of `shape`, on this CPU:
    one untimed call each, then TIMING_RUNS calls each, alternating, so that other load falls on both alike."""
    keep_freed_memory()  # as `anydepth predict` runs PyTorch on the CPU
    sample = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(1))
    calls = {"torch": lambda: network(sample), "onnxruntime": lambda: predictor.run(sample)}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for index in range(TIMING_RUNS + 1):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                if index:
                    seconds[name].append(time.perf_counter() - started)
    return CpuTiming(cpu_name(), torch.get_num_threads(), shape, statistics.median(seconds["torch"]),
                     statistics.median(seconds["onnxruntime"]))


def export_network(network: DepthNetwork, path: Path, card: ModelCard) -> ExportSummary:
    """Write `network` (in eval mode, on the CPU, float32) to `path` as ONNX with `card` in its metadata.

    The file appears only once `onnx.checker` passed and ONNX Runtime reproduced the network within TOLERANCE at a
    size other than the traced one. Both backends are then timed on this CPU at that size (`time_backends`), and
    the timing is stored in the file (TIMING_KEY) for `predict --backend auto`.
    """
    import onnx

    started = time.perf_counter()
    program = trace(network)
    proto = program.model_proto
    for key, value in card.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"{card.model}: affine-invariant {card.output} from anydepth-cli {card.version}"
    weight_bytes = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    external = Path(path).name + ".data" if weight_bytes > SINGLE_FILE_LIMIT else None
    check_shape = network_size(3, 4, card.input_size, card.patch_size)
    differences: list[float] = []
    timings: list[CpuTiming] = []

    def save(temp: Path) -> None:
        onnx.save_model(proto, str(temp), save_as_external_data=external is not None, all_tensors_to_one_file=True,
                        location=external)

    def write(temp: Path) -> None:
        save(temp)
        try:
            onnx.checker.check_model(str(temp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"onnx.checker rejects the exported model: {str(exc).strip().splitlines()[0]}") from None
        predictor = OnnxPredictor(temp, device="cpu")
        differences.append(check_with_onnxruntime(predictor, network, check_shape))
        if differences[0] > TOLERANCE:
            raise ExportError(f"ONNX Runtime differs from PyTorch by {differences[0]:.2e} (relative) at "
                              f"{check_shape[0]}×{check_shape[1]}; the export is not written")
        timings.append(time_backends(predictor, network, check_shape))
        del predictor
        proto.metadata_props.add(key=TIMING_KEY, value=timings[0].to_metadata())
        save(temp)

    data = Path(path).with_name(external) if external else None
    try:
        atomic_write(path, write)
    except BaseException:
        if data is not None:
            data.unlink(missing_ok=True)
        raise
    size = Path(path).stat().st_size + (data.stat().st_size if data else 0)
    return ExportSummary(Path(path), card, size, data, check_shape, differences[0], timings[0],
                         time.perf_counter() - started)


NOT_EXPORTED = {"vggt": "its position table (antialiased resampling) and rotary tables are not traced for every "
                        "input size"}
"""Encoders export refuses, and why."""


def export_model(model: str | None, checkpoint: str | None, arch: Path | None, path: Path | None,
                 input_size: int | None = None,
                 on_stage: Callable[[str], None] = lambda stage: None) -> ExportSummary:
    """Export the chosen weights (downloaded if needed) to ONNX at `path` (default: NAME.onnx here); `on_stage` hears
    what is being done."""
    require_exporter()
    choice = choose_weights(model, checkpoint, arch)
    why = NOT_EXPORTED.get(choice.config.encoder)
    if why is not None:
        raise ExportError(f"{choice.config.encoder} networks are not exported to ONNX: {why}; run them with PyTorch")
    size = input_size or choice.input_size
    if size < choice.config.patch_size:
        raise ExportError(f"--input-size must be at least {choice.config.patch_size}")
    on_stage("loading weights")
    network = prepare_for_inference(load_network(choice.config, weights_path(choice)))
    on_stage("exporting to ONNX (a minute or more for large models)")
    return export_network(network, path or Path(Path(choice.label).stem + ".onnx"),
                          ModelCard.of(choice.label, choice.config, size))
