"""Our network against the reference implementation, on the same weights, side by side in one run (a benchmark).

    python benchmarks/reference.py --anydepth-code ~/src/AnyDepth --dav2-code ~/src/Depth-Anything-V2
    python benchmarks/reference.py --anydepth-code ... --dav2-code ... --model dav2-dpt-vitb --repeats 9

The reference is the authors' code, which this project does not ship: clone
https://github.com/AIGeeksGroup/AnyDepth (its SDT head, `model/sdt_head.py`) and
https://github.com/DepthAnything/Depth-Anything-V2 (the DINOv2 encoder both published model families run on,
and the DPT head of the `dav2-dpt-*` models) and give their folders. The reference SDT model is Depth Anything
V2's DINOv2 with AnyDepth's SDT head on the tapped layers, ending in relu(x) + 0.001 as the AnyDepth code does;
the DPT model is Depth Anything V2's own `DepthAnythingV2`.

Both get the same random weights (`anydepth_cli.bench.weights`: every BatchNorm, LayerScale, position table and
DySample offset varied, and the head's last bias lifted so that the outputs vary above the final ReLU), saved as a
`dav2`-layout checkpoint. Each side runs in its own process, as a user would run it: ours is the predictor
`anydepth predict --model MODEL --checkpoint FILE --device cpu` opens (the inference fast path, fp32,
torch.inference_mode, and the process's memory policy, `keep_freed_memory`), called on a prepared batch; the
reference is its code as it stands, loaded strictly from the same file and called under torch.inference_mode
(with `--same-allocator` also under our memory policy, so that only the implementations differ). The input is
the Grace Hopper photo resized to SIZE x SIZE and normalised. After one untimed call each, calls alternate (ours,
reference, ours, ...) while the other side waits, so load from other processes falls on both alike. Prints JSON:
for wall time and for the calling process's CPU time (all its threads; on a machine shared with other work it
counts the work done, not the waiting), the medians, fastest and all timings and the ratios reference / ours;
the largest output difference relative to the output range; and the load average before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import types
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from anydepth_cli.bench.weights import lift_outputs, output_difference, photo_batch, vary_weights
from anydepth_cli.evaluation.sanity import sample_photo
from anydepth_cli.inference.memory import keep_freed_memory
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork, build_network
from anydepth_cli.models.registry import DEFAULT_MODEL, MODELS, get_model
from anydepth_cli.pipelines.runtime import open_predictor

VIT_NAMES = {384: "vits", 768: "vitb", 1024: "vitl"}
SUPPORTED = [name for name, spec in MODELS.items() if spec.config.layout == "dav2"]


class ReferenceSDT(nn.Module):
    """Depth Anything V2's DINOv2 (`pretrained`) feeding AnyDepth's SDT head (`depth_head`), as the published
    `dav2_sdt_vitb.pth` keys name them."""

    def __init__(self, encoder: nn.Module, head: nn.Module, config: NetworkConfig) -> None:
        super().__init__()
        self.pretrained, self.depth_head = encoder, head
        self.layers, self.norm, self.floor = list(config.layers), config.encoder_norm, config.output_floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pretrained.get_intermediate_layers(x, self.layers, reshape=True, return_class_token=True,
                                                           norm=self.norm)
        return torch.relu(self.depth_head(list(features))) + self.floor


class ReferenceDPT(nn.Module):
    """Depth Anything V2's own model, with the channel axis its `forward` squeezes out put back."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).unsqueeze(1)


def load_file_module(path: Path, name: str) -> types.ModuleType:
    """Import the Python file at `path` as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_dav2(folder: Path) -> types.ModuleType:
    """Depth Anything V2's `depth_anything_v2` package from a checkout. Its `dpt.py` imports torchvision only for
    the preprocessing transforms, which are not used here; without torchvision a stand-in is registered."""
    if not (folder / "depth_anything_v2" / "dinov2.py").is_file():
        raise SystemExit(f"{folder} is not a Depth-Anything-V2 checkout (no depth_anything_v2/dinov2.py)")
    if importlib.util.find_spec("torchvision") is None:
        transforms = types.ModuleType("torchvision.transforms")
        transforms.Compose = lambda steps: steps  # type: ignore[attr-defined]
        sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
        sys.modules.setdefault("torchvision.transforms", transforms)
    sys.path.insert(0, str(folder))
    import depth_anything_v2.dinov2
    import depth_anything_v2.dpt

    return depth_anything_v2


def reference_network(config: NetworkConfig, anydepth_code: Path | None, dav2_code: Path) -> nn.Module:
    """The reference implementation of `config` (a `dav2`-layout SDT or DPT network), with its own initial weights."""
    dav2 = import_dav2(dav2_code)
    vit = VIT_NAMES[config.embed]
    if config.head == "dpt":
        return ReferenceDPT(dav2.dpt.DepthAnythingV2(encoder=vit, features=config.features,
                                                     out_channels=list(config.out_channels), use_clstoken=config.cls))
    if anydepth_code is None:
        raise SystemExit("an SDT model needs --anydepth-code (a checkout of AIGeeksGroup/AnyDepth)")
    sdt = load_file_module(anydepth_code / "model" / "sdt_head.py", "reference_sdt_head")
    head = sdt.SDTHead([config.embed] * 4, fusion_channels=config.fusion, n_output_channels=1,
                       use_cls_token=config.cls)
    return ReferenceSDT(dav2.dinov2.DINOv2(vit), head, config)


def checkpoint_keys(network: DepthNetwork) -> dict[str, torch.Tensor]:
    """`network`'s weights under the `dav2` checkpoint names (`pretrained.*`, `depth_head.*`)."""
    names = {"encoder.": "pretrained.", "head.": "depth_head."}
    return {names[key.split(".", 1)[0] + "."] + key.split(".", 1)[1]: value
            for key, value in network.state_dict().items()}


def our_call(args: argparse.Namespace, checkpoint: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The network call of the predictor `anydepth predict --model MODEL --checkpoint FILE --device cpu` opens."""
    predictor, _ = open_predictor(args.model, str(checkpoint), None, "cpu", "fp32", 1, args.size)
    return predictor.run


def reference_call(args: argparse.Namespace, checkpoint: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The reference model holding the checkpoint's weights (loaded strictly), called under inference mode."""
    if args.same_allocator:
        keep_freed_memory()
    reference = reference_network(get_model(args.model).config, args.anydepth_code, args.dav2_code)
    target = reference.model if isinstance(reference, ReferenceDPT) else reference
    target.load_state_dict(torch.load(checkpoint, weights_only=True), strict=True)
    reference.eval()

    def call(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return reference(batch)
    return call


def worker(kind: str, args: argparse.Namespace, folder: Path, connection: Connection) -> None:
    """One side of the comparison in its own process: build it, send its output, then time one call per request."""
    if args.threads:
        torch.set_num_threads(args.threads)
    build = our_call if kind == "ours" else reference_call
    call = build(args, folder / "weights.pth")
    batch = torch.load(folder / "batch.pt", weights_only=True)
    connection.send(call(batch))
    while connection.recv() == "run":
        wall, cpu = time.perf_counter(), time.process_time()
        call(batch)
        connection.send((time.perf_counter() - wall, time.process_time() - cpu))


def interleaved(connections: dict[str, Connection], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and process CPU seconds of `repeats` calls of each side, alternating between them."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in connections}
    for _ in range(repeats):
        for name, connection in connections.items():
            connection.send("run")
            wall, cpu = connection.recv()
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    return times


def summary(times: dict[str, dict[str, list[float]]], clock: str) -> dict:
    """Medians, fastest and all timings of one clock, and the reference / ours ratios of medians and of fastest."""
    median = {name: statistics.median(t[clock]) for name, t in times.items()}
    fastest = {name: min(t[clock]) for name, t in times.items()}
    return {"median_seconds": {name: round(v, 3) for name, v in median.items()},
            "fastest_seconds": {name: round(v, 3) for name, v in fastest.items()},
            "all_seconds": {name: [round(v, 3) for v in t[clock]] for name, t in times.items()},
            "speedup_of_medians": round(median["reference"] / median["ours"], 3),
            "speedup_of_fastest": round(fastest["reference"] / fastest["ours"], 3)}


def compare(args: argparse.Namespace, folder: Path) -> dict:
    """Start both sides, collect their outputs and interleaved timings, and stop them."""
    context = multiprocessing.get_context("spawn")
    connections, processes = {}, []
    for kind in ("ours", "reference"):
        mine, theirs = context.Pipe()
        process = context.Process(target=worker, args=(kind, args, folder, theirs), daemon=True)
        process.start()
        connections[kind] = mine
        processes.append(process)
    try:
        outputs = {kind: connection.recv() for kind, connection in connections.items()}
        load_before = os.getloadavg()
        times = interleaved(connections, args.repeats)
        load_after = os.getloadavg()
    finally:
        for connection in connections.values():
            connection.send("stop")
        for process in processes:
            process.join(timeout=60)
    return {"load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in load_after],
            "wall": summary(times, "wall"), "process_cpu": summary(times, "cpu"),
            "output": output_difference(outputs["ours"], outputs["reference"])}


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the comparison and return the report it prints."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--anydepth-code", type=Path, help="checkout of github.com/AIGeeksGroup/AnyDepth")
    parser.add_argument("--dav2-code", type=Path, required=True,
                        help="checkout of github.com/DepthAnything/Depth-Anything-V2")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=SUPPORTED, help="registry model to compare")
    parser.add_argument("--size", type=int, default=518, help="square input side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="PyTorch threads (default: PyTorch's own choice)")
    parser.add_argument("--same-allocator", action="store_true",
                        help="give the reference the memory policy ours runs with (keep_freed_memory), so that only "
                             "the implementations differ")
    args = parser.parse_args(argv)
    spec = get_model(args.model)
    if args.size % spec.config.patch_size:
        raise SystemExit(f"--size must be a multiple of {spec.config.patch_size}")
    torch.manual_seed(args.seed)
    batch = photo_batch(sample_photo(), args.size)
    network = lift_outputs(vary_weights(build_network(spec.config), args.seed), batch)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(checkpoint_keys(network), Path(folder) / "weights.pth")
        torch.save(batch, Path(folder) / "batch.pt")
        measured = compare(args, Path(folder))
    report = {"model": spec.name, "input": list(batch.shape), "dtype": "float32",
              "threads": args.threads or torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "torch": torch.__version__, "repeats": args.repeats, "same_allocator": args.same_allocator, **measured}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
