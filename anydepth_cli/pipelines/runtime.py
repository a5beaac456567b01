"""From command-line choices to a ready predictor: weights or an exported model, backend, device, precision."""

from __future__ import annotations

from pathlib import Path

from anydepth_cli.errors import UsageError
from anydepth_cli.weights.checkpoint import load_network
from anydepth_cli.inference.predictor import BatchedPredictor, DepthPredictor, select_device, select_dtype
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.weights.choice import choose_weights, weights_path

BACKENDS = ("torch", "onnxruntime")


def open_predictor(model: str | None, checkpoint: str | None, arch: Path | None, device: str = "auto",
                   precision: str = "auto", batch_size: int = 4, input_size: int | None = None,
                   backend: str = "torch", onnx: Path | None = None) -> tuple[BatchedPredictor, str]:
    """A predictor for the chosen weights (downloaded if needed), or for an exported ONNX model with
    `backend="onnxruntime"`, and a label naming them."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        return open_onnx_predictor(onnx, model, checkpoint, arch, device, precision, batch_size, input_size)
    if onnx is not None:
        raise UsageError("--onnx runs with --backend onnxruntime")
    choice = choose_weights(model, checkpoint, arch)
    target = select_device(device)
    dtype = select_dtype(precision, target)
    network = prepare_for_inference(load_network(choice.config, weights_path(choice), target))
    predictor = DepthPredictor(network, input_size or choice.input_size, target, dtype, batch_size)
    return predictor, choice.label


def open_onnx_predictor(onnx: Path | None, model: str | None, checkpoint: str | None, arch: Path | None,
                        device: str, precision: str, batch_size: int,
                        input_size: int | None) -> tuple[BatchedPredictor, str]:
    """The ONNX Runtime predictor of `--onnx FILE` (which holds the weights) and a label naming its model and provider."""
    from anydepth_cli.inference.onnx_backend import OnnxPredictor

    if onnx is None:
        raise UsageError("--backend onnxruntime needs --onnx FILE (made by `anydepth export`)")
    given = [name for name, value in (("--model", model), ("--checkpoint", checkpoint), ("--arch", arch)) if value]
    if given:
        raise UsageError(f"--onnx holds the weights: drop {', '.join(given)}")
    if precision not in ("auto", "fp32"):
        raise UsageError("--backend onnxruntime runs the exported float32 model: use --precision auto or fp32")
    predictor = OnnxPredictor(onnx, input_size, device, batch_size)
    return predictor, f"{predictor.card.model} via ONNX Runtime ({Path(onnx).name}, {predictor.provider})"
