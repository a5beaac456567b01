"""PyTorch's fast path against ONNX Runtime on the same network, same machine, same run (a benchmark).

    python benchmarks/backends.py                              # anydepth-dav2-vitb, 518x518, CPU, 5 repeats
    python benchmarks/backends.py --model dav2-dpt-vits --repeats 10
    python benchmarks/backends.py --onnx-precision int8        # int8 ONNX against PyTorch fp32 and bf16 (issue 35)
    python benchmarks/backends.py --device cuda                # PyTorch bf16 autocast against ONNX Runtime's CUDA provider

Builds the registry model's architecture with random weights whose outputs vary (no download;
`anydepth_cli.bench.weights`: BatchNorms, LayerScales, position table and DySample offsets varied, and the head's
last bias lifted so that most of the output sits above the final ReLU), applies the inference fast path
(`prepare_for_inference`) and the CPU memory policy (`keep_freed_memory`), as `anydepth predict` does, exports it
with `anydepth_cli.export.onnx` into a temporary folder (in `--onnx-precision`; int8 calibrated on the photo and
its mirror image), and times one network call on the normalised Grace Hopper photo with each backend's `run`, the
only code in which the predictors differ. PyTorch runs in `auto` precision and, where that is not fp32, in fp32 as
well (its network prepared for each dtype, as `predict` prepares it). Calls alternate between the
backends (after one untimed warm-up each), so other load on a shared machine affects both alike; the median and
the fastest of each are kept. All use as many threads as PyTorch does. Prints JSON: the timings, each backend's
speed-up over PyTorch fp32, the largest difference between the outputs relative to the output's range (with the
range, so that a constant map cannot pass for parity), and the load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from anydepth_cli.bench.weights import lift_outputs, output_difference, photo_batch, vary_weights
from anydepth_cli.evaluation.sanity import sample_photo
from anydepth_cli.export.onnx import export_network
from anydepth_cli.inference.memory import keep_freed_memory
from anydepth_cli.inference.model_card import ModelCard
from anydepth_cli.inference.onnx_backend import OnnxPredictor
from anydepth_cli.inference.precision import select_dtype
from anydepth_cli.inference.predictor import DepthPredictor, select_device
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.models.network import build_network
from anydepth_cli.models.registry import DEFAULT_MODEL, get_model


def seconds(call: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Wall time of one call, waiting for the GPU where there is one."""
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the comparison and return the report it prints."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="registry model whose architecture is measured")
    parser.add_argument("--size", type=int, default=518, help="square input side in pixels")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per backend")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--onnx-precision", default="fp32", choices=("fp32", "fp16", "int8"),
                        help="the precision the ONNX model is exported in")
    args = parser.parse_args(argv)

    spec = get_model(args.model)
    patch = spec.config.patch_size
    if args.size % patch:
        raise SystemExit(f"--size must be a multiple of {patch}")
    device = select_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(0)
    batch = photo_batch(sample_photo(), args.size).expand(args.batch_size, -1, -1, -1).contiguous()
    varied = lift_outputs(vary_weights(build_network(spec.config)), batch)
    network = prepare_for_inference(copy.deepcopy(varied))
    auto = select_dtype("auto", device)
    calibration = [batch[:1].numpy(), batch[:1].flip(-1).numpy()] if args.onnx_precision == "int8" else None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{spec.name}.onnx"
        started = time.perf_counter()
        export_network(network, path, ModelCard.of(spec.name, spec.config, args.size, args.onnx_precision,
                                                    len(calibration or ())), calibration)
        export_seconds = time.perf_counter() - started
        onnx_bytes = path.stat().st_size
        backends = {"torch": DepthPredictor(network, args.size, device, torch.float32, args.batch_size)}
        if auto != torch.float32:
            backends[f"torch_{str(auto).removeprefix('torch.')}"] = DepthPredictor(
                prepare_for_inference(varied, auto), args.size, device, auto, args.batch_size)
        onnx = f"onnxruntime_{args.onnx_precision}"
        backends[onnx] = OnnxPredictor(path, args.size, device.type, args.batch_size)
        inputs = {name: batch if name == onnx else batch.to(device) for name in backends}
        outputs = {name: predictor.run(inputs[name]).float().cpu() for name, predictor in backends.items()}
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(args.repeats):
            for name, predictor in backends.items():
                times[name].append(seconds(lambda: predictor.run(inputs[name]), device))
    median = {name: statistics.median(values) for name, values in times.items()}
    report = {
        "model": spec.name, "input": [args.batch_size, 3, args.size, args.size], "device": device.type,
        "onnxruntime_provider": backends[onnx].provider, "threads": torch.get_num_threads(),
        "repeats": args.repeats, "export_seconds": round(export_seconds, 1), "onnx_megabytes": round(onnx_bytes / 2**20, 1),
        "median_seconds": {name: round(value, 4) for name, value in median.items()},
        "fastest_seconds": {name: round(min(values), 4) for name, values in times.items()},
        "all_seconds": {name: [round(v, 4) for v in values] for name, values in times.items()},
        "speedup_over_torch_fp32": {name: round(median["torch"] / value, 2) for name, value in median.items()},
        "fastest": min(median, key=median.get),
        "output_vs_torch_fp32": {name: output_difference(outputs[name], outputs["torch"])
                                 for name in backends if name != "torch"},
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                    "onnxruntime": __import__("onnxruntime").__version__},
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
