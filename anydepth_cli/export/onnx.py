"""ONNX export: a network → one .onnx file with dynamic batch, height and width, in fp32, fp16 or int8
(`lowering`), its model card in the metadata, checked by `onnx.checker` and by ONNX Runtime against PyTorch before
it is put in place."""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from anydepth_cli.errors import ExportError, InputError, MissingExtraError, UsageError
from anydepth_cli.export.lowering import EXPORT_PRECISIONS, to_fp16, to_int8
from anydepth_cli.inference.memory import keep_freed_memory
from anydepth_cli.inference.model_card import ModelCard
from anydepth_cli.inference.onnx_backend import TIMING_KEY, CpuTiming, OnnxPredictor, cpu_name
from anydepth_cli.inference.preprocess import Resizing, network_size, prepare_batch, resizing_of
from anydepth_cli.io.images import discover_inputs, read_image
from anydepth_cli.io.writers import atomic_write
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.weights.checkpoint import load_network
from anydepth_cli.weights.choice import choose_weights, weights_path

if TYPE_CHECKING:
    import onnx

OPSET = 18
INPUT_NAME = "image"
SAMPLE_GRID = (9, 11)
"""Patch grid of the traced input: unequal odd sides, not the trained 37×37, so that no size is baked in."""
SINGLE_FILE_LIMIT = 2_000_000_000
"""Weights larger than this (bytes; protobuf's 2 GB limit) go to NAME.onnx.data beside the model."""
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}
"""Largest |ONNX Runtime − PyTorch| accepted, relative to the output's largest magnitude (at least 1): float32
rounding; for fp16, ten times what fp16's 11-bit significand gave on the shared fixtures (2e-3 to 3e-3 of the
range), so that only a broken lowering fails."""
INT8_CORRELATION = 0.9
"""Least correlation of an int8 export's output with PyTorch's on a calibration photo (0.998 on the shared
fixtures): int8 is checked for agreement, not for equality."""
CALIBRATION_MAX_PIXELS = 120_000_000
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
    correlation: float
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
    """Silence the exporter's and the quantiser's progress prints, warnings and log records (errors still raise)."""
    loggers = [logging.root,
               *(logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript"))]
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


def check_with_onnxruntime(predictor: OnnxPredictor, network: DepthNetwork, sample: torch.Tensor
                           ) -> tuple[float, float]:
    """max |ONNX Runtime − PyTorch| on `sample`, relative to the output's largest magnitude, and the correlation of
    the two outputs."""
    with torch.inference_mode():
        expected = network(sample)
    output = predictor.run(sample)
    if output.shape != expected.shape:
        raise ExportError(f"the exported model gives shape {tuple(output.shape)}, PyTorch {tuple(expected.shape)}")
    correlation = float(torch.corrcoef(torch.stack([output.flatten(), expected.flatten()]))[0, 1])
    return float((output - expected).abs().max() / max(float(expected.abs().max()), 1.0)), correlation


def check_sample(shape: tuple[int, int], calibration: list[np.ndarray] | None) -> torch.Tensor:
    """The input an export is checked on: the first calibration photo for int8 (its ranges are the photos'), else a
    random image of `shape`."""
    if calibration:
        return torch.from_numpy(calibration[0])
    return torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))


def calibration_batches(folder: Path, resizing: Resizing) -> list[np.ndarray]:
    """Every readable photo in `folder` (recursively) as a normalised 1×3×H×W network input; UsageError when the
    folder holds none."""
    if not Path(folder).is_dir():
        raise UsageError(f"--calibrate {folder} is not a folder")
    try:
        items = discover_inputs([Path(folder)]).items
    except UsageError as exc:
        raise UsageError(f"--calibrate: {exc}") from None
    batches = []
    for item in items:
        try:
            image = read_image(item.path, CALIBRATION_MAX_PIXELS)
        except InputError:
            continue
        batches.append(prepare_batch([image], resizing).numpy())
    if not batches:
        raise UsageError(f"--calibrate {folder}: no readable photo ({len(items)} file(s) could not be read)")
    return batches


def lower(proto: "onnx.ModelProto", precision: str, calibration: list[np.ndarray] | None) -> "onnx.ModelProto":
    """The traced float32 model in `precision` (see `lowering`)."""
    if precision == "fp16":
        return to_fp16(proto)
    if precision == "int8":
        with quiet_exporter():
            return to_int8(proto, calibration or [], INPUT_NAME)
    return proto


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


def export_network(network: DepthNetwork, path: Path, card: ModelCard,
                   calibration: list[np.ndarray] | None = None) -> ExportSummary:
    """Write `network` (in eval mode, on the CPU, float32) to `path` as ONNX in `card.precision` with `card` in its
    metadata; an int8 export is calibrated on `calibration` (`calibration_batches`).

    The file appears only once `onnx.checker` passed and ONNX Runtime reproduced the network within TOLERANCE at a
    size other than the traced one (int8: correlated with it by INT8_CORRELATION on a calibration photo). Both
    backends are then timed on this CPU at that size (`time_backends`), and the timing is stored in the file
    (TIMING_KEY) for `predict --backend auto`.
    """
    import onnx

    started = time.perf_counter()
    proto = lower(trace(network).model_proto, card.precision, calibration)
    for key, value in card.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"{card.model}: affine-invariant {card.output} from anydepth-cli {card.version}"
    weight_bytes = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    external = Path(path).name + ".data" if weight_bytes > SINGLE_FILE_LIMIT else None
    sample = check_sample(network_size(3, 4, card.input_size, card.patch_size), calibration)
    check_shape = tuple(sample.shape[-2:])
    differences: list[tuple[float, float]] = []
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
        differences.append(check_with_onnxruntime(predictor, network, sample))
        difference, correlation = differences[0]
        if card.precision == "int8" and not correlation >= INT8_CORRELATION:
            raise ExportError(f"the int8 export correlates with PyTorch by only {correlation:.3f} on a calibration "
                              "photo; the export is not written")
        if card.precision != "int8" and difference > TOLERANCE[card.precision]:
            raise ExportError(f"ONNX Runtime differs from PyTorch by {difference:.2e} (relative) at "
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
    return ExportSummary(Path(path), card, size, data, check_shape, *differences[0], timings[0],
                         time.perf_counter() - started)


NOT_EXPORTED = {"vggt": "its position table (antialiased resampling) and rotary tables are not traced for every "
                        "input size"}
"""Encoders export refuses, and why."""


def export_model(model: str | None, checkpoint: str | None, arch: Path | None, path: Path | None,
                 input_size: int | None = None, precision: str = "fp32", calibrate: Path | None = None,
                 on_stage: Callable[[str], None] = lambda stage: None) -> ExportSummary:
    """Export the chosen weights (downloaded if needed) to ONNX at `path` (default: NAME.onnx here) in `precision`,
    an int8 export calibrated on the photos in `calibrate`; `on_stage` hears what is being done."""
    check_export_precision(precision, calibrate)
    require_exporter()
    choice = choose_weights(model, checkpoint, arch)
    why = NOT_EXPORTED.get(choice.config.encoder)
    if why is not None:
        raise ExportError(f"{choice.config.encoder} networks are not exported to ONNX: {why}; run them with PyTorch")
    size = input_size or choice.input_size
    if size < choice.config.patch_size:
        raise ExportError(f"--input-size must be at least {choice.config.patch_size}")
    calibration = None
    if precision == "int8":
        on_stage("reading the calibration photos")
        calibration = calibration_batches(calibrate, resizing_of(choice.config, size))
    on_stage("loading weights")
    network = prepare_for_inference(load_network(choice.config, weights_path(choice)))
    on_stage("exporting to ONNX (a minute or more for large models)")
    card = ModelCard.of(choice.label, choice.config, size, precision, len(calibration or []))
    return export_network(network, path or Path(Path(choice.label).stem + ".onnx"), card, calibration)


def check_export_precision(precision: str, calibrate: Path | None) -> None:
    """UsageError for an unknown precision, int8 without calibration photos, or photos for another precision."""
    if precision not in EXPORT_PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(EXPORT_PRECISIONS)}")
    if precision == "int8" and calibrate is None:
        raise UsageError("--precision int8 needs --calibrate FOLDER: a few dozen of your own photos to calibrate on")
    if precision != "int8" and calibrate is not None:
        raise UsageError("--calibrate goes with --precision int8")
