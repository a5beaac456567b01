"""What each precision costs in accuracy, measured: fp32, bf16 (PyTorch), fp16 and int8 (ONNX Runtime).

    python benchmarks/precision.py                          # both encoder families, 150 steps, every fixture
    python benchmarks/precision.py --steps 400 --seeds 0,1 --families dinov3 --only-fixtures "tiny_*_sdt"

Accuracy of trained heads: small heads are trained on the toy set of `tools/make_toy_dataset.py` as
`benchmarks/train_learning.py` trains them (in fp32), then scored on its held-out images as `anydepth eval` scores
(AbsRel, δ1) in each precision; the int8 export is calibrated on the training images. One JSON line per head and
precision, with AbsRel's change relative to fp32's.

Output difference on every fixture: each shared fixture network, with its own weights, on the sample photo, in
each precision: the largest |output − fp32 output| relative to the fp32 output's range. One JSON line per fixture
and precision.

Speed is not measured here (the fixtures are too small to time): see `anydepth bench --precision` and the README's
precision table. A benchmark, not a test: tests/test_fastpath.py and tests/test_export_precision.py check the
kernels and exports.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import matplotlib
import numpy as np
import torch

from anydepth_cli.bench.weights import output_difference
from anydepth_cli.datasets import generic
from anydepth_cli.datasets.family import open_set
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.evaluation.folder_run import run_eval
from anydepth_cli.export.onnx import export_network
from anydepth_cli.inference.model_card import ModelCard
from anydepth_cli.inference.onnx_backend import OnnxPredictor
from anydepth_cli.inference.predictor import BatchedPredictor, DepthPredictor
from anydepth_cli.inference.preprocess import prepare_batch, resizing_of
from anydepth_cli.io.images import read_image
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.weights.checkpoint import load_network

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_learning import REPO, train_head, make_toy_set  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16-onnx", "int8-onnx")
CPU = torch.device("cpu")

Runner = Callable[[str], BatchedPredictor]
"""A precision's name → a predictor of one network in that precision."""


def runners(network: DepthNetwork, size: int, folder: Path, calibration: list[np.ndarray]) -> Runner:
    """Predictors of `network` (float32, eval mode, as loaded) in each of PRECISIONS; exports go to `folder`."""

    def runner(precision: str) -> BatchedPredictor:
        if precision in ("fp32", "bf16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            return DepthPredictor(prepare_for_inference(copy.deepcopy(network), dtype), size, CPU, dtype, 4)
        name = precision.removesuffix("-onnx")
        path = folder / f"{name}.onnx"
        card = ModelCard.of("benchmark", network.config, size, name, len(calibration) if name == "int8" else 0)
        export_network(prepare_for_inference(copy.deepcopy(network)), path, card,
                       calibration if name == "int8" else None)
        return OnnxPredictor(path, size, "cpu", 4)

    return runner


def calibration_of(images: list[np.ndarray], config: NetworkConfig, size: int) -> list[np.ndarray]:
    """Images as the normalised 1×3×H×W inputs an int8 export calibrates on."""
    resizing = resizing_of(config, size)
    return [prepare_batch([image], resizing).numpy() for image in images]


def _photos(folder: Path) -> list[np.ndarray]:
    """The photos of a folder of image/depth pairs."""
    train = open_set(generic.family(), folder)
    return [train.reader.rgb(sample) for sample in train.samples]


def trained_heads(root: Path, args: argparse.Namespace) -> Iterator[dict]:
    """Train a head per family and seed, and score it in every precision."""
    val = open_set(generic.family(), root / "val")
    train_images = _photos(root / "train")
    for family in args.families.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            output, _, _ = train_head(root, family, "depth", args.steps, args.lr, seed, args)
            network = load_network(NetworkConfig.from_file(output / "arch.json"), output / "model.pth")
            calibration = calibration_of(train_images, network.config, args.input_size)
            runner = runners(network, args.input_size, output, calibration)
            scores = {}
            for precision in PRECISIONS:
                result = run_eval(val, {"model": runner(precision)}, get_preset("default"), batch_size=4)
                scores[precision] = result.aggregates["model"]
            for precision, score in scores.items():
                change = score["abs_rel"] / scores["fp32"]["abs_rel"] - 1
                yield {"kind": "trained head", "family": family, "seed": seed, "steps": args.steps,
                       "precision": precision, "abs_rel": round(score["abs_rel"], 5),
                       "delta1": round(score["delta1"], 5), "abs_rel_change_vs_fp32": round(change, 5)}


def fixture_differences(root: Path, args: argparse.Namespace) -> Iterator[dict]:
    """Every fixture network on the sample photo in every precision, against its fp32 output."""
    photo = read_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", None)
    train_images = _photos(root / "train")
    for path in sorted(args.fixtures.glob(f"{args.only_fixtures}.json")):
        config = NetworkConfig.from_file(path)
        network = load_network(config, path.with_suffix(".pth"))
        folder = root / path.stem
        folder.mkdir()
        runner = runners(network, args.input_size, folder, calibration_of(train_images, config, args.input_size))
        maps = {precision: runner(precision).predict_batch([photo])[0] for precision in PRECISIONS}
        for precision, values in maps.items():
            difference = output_difference(torch.from_numpy(values), torch.from_numpy(maps["fp32"]))
            yield {"kind": "fixture", "fixture": path.stem, "precision": precision,
                   "max_difference_over_range": float(f"{difference['max_difference_over_range']:.3g}")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="dinov2,dinov3")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--input-size", type=int, default=56)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--only-fixtures", default="*", help="a glob over the fixtures' names")
    parser.add_argument("--fixtures", type=Path,
                        default=Path(os.environ.get("ANYDEPTH_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures"))
    args = parser.parse_args(argv)
    args.precision, args.device = "fp32", "cpu"  # the heads train in fp32; each precision is then scored
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        make_toy_set(root, args.families.split(","), args.fixtures)
        for row in itertools.chain(trained_heads(root, args), fixture_differences(root, args)):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
