"""Does a fresh head learn, the right way round, whatever the schedule? A sweep of `anydepth train` on the toy set.

    python benchmarks/train_learning.py                                    # both encoder families, depth, 150 steps
    python benchmarks/train_learning.py --steps 150,400,2000 --lrs 1e-4,1e-3 --seeds 0,1,2 --input-size 112
    python benchmarks/train_learning.py --targets depth,disparity --precision bf16 --device cuda

Every run trains a fresh head (batch 4 by default) on the toy set of `tools/make_toy_dataset.py` with the
encoder of a fixture network (`dinov2`: tiny_dav2_sdt, `dinov3`: tiny_dinov3_sdt), then scores it on the
held-out images as `anydepth eval` does, in fp32 and in bf16. One JSON line per run: the held-out AbsRel of
the untrained and the trained head, the smallest and largest per-image alignment scale (positive: the output
runs the way its `arch.json` declares), the output's spread (2nd to 98th percentile) over its mean, the mean
training loss of the first 5 and last 10 steps, and the seconds taken. Nothing is downloaded. A benchmark, not
a test: tests/test_train.py runs a few of these cases, short.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anydepth_cli.datasets import generic
from anydepth_cli.datasets.family import open_set
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.evaluation.folder_run import run_eval
from anydepth_cli.evaluation.unaligned import unaligned_label
from anydepth_cli.inference.predictor import DepthPredictor, select_device
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.training.loop import train
from anydepth_cli.training.options import TrainOptions, training_config
from anydepth_cli.training.report import Reporter
from anydepth_cli.training.start import fresh_network
from anydepth_cli.weights.checkpoint import load_network

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from make_toy_dataset import make_dataset, save_fixture_encoder  # noqa: E402

FAMILIES = {"dinov2": "tiny_dav2_sdt", "dinov3": "tiny_dinov3_sdt"}
METRIC_RANGE = 10.0
"""The toy set's depths run from 1 to 5 m: a metric head's range for it."""


class Losses(Reporter):
    """Keeps every step's loss."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def step(self, step: int, loss: float, lr: float, images_per_second: float) -> None:
        self.losses.append(loss)


def held_out(network: DepthNetwork, val: Path, size: int, device: torch.device) -> dict[str, float]:
    """AbsRel in fp32 and bf16, the smallest and largest per-image scale (fp32), and the output's relative spread."""
    pairs = open_set(generic.family(), val)
    out: dict[str, float] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        predictor = DepthPredictor(network, size, device, dtype, 4)
        result = run_eval(pairs, {"model": predictor}, get_preset("default"), batch_size=4,
                          unaligned=network.config.metric)
        out[f"abs_rel_{name}"] = result.aggregates["model"]["abs_rel"]
        if network.config.metric:
            out[f"abs_rel_unaligned_{name}"] = result.aggregates[unaligned_label("model")]["abs_rel"]
        if name == "fp32":
            scales = [float(row["scale"]) for row in result.rows if row["model"] == "model"]
            out.update(min_scale=min(scales), max_scale=max(scales))
            maps = predictor.predict_batch([pairs.reader.rgb(sample) for sample in pairs.samples])
            out["spread"] = float(np.mean([np.ptp(np.percentile(m, [2, 98])) / m.mean() for m in maps]))
    return out


def train_head(root: Path, family: str, target: str, steps: int, lr: float, seed: int,
               args: argparse.Namespace) -> tuple[Path, Losses, float]:
    """Train one fresh head on `root`/train with the family's fixture encoder (`make_toy_set`): the run's folder
    (model.pth, arch.json), its losses and the seconds taken."""
    output = root / f"run-{family}-{target}-{steps}-{lr}-{seed}"
    options = TrainOptions(data=(root / "train",), output=output, arch=args.fixtures / f"{FAMILIES[family]}.json",
                           encoder_weights=root / f"encoder-{family}.pth", target=target, steps=steps, lr=lr,
                           seed=seed, input_size=args.input_size, batch_size=args.batch_size,
                           precision=args.precision, device=args.device, workers=0, save_every=10 ** 9,
                           max_depth=f"{METRIC_RANGE:g}" if target == "metric" else None)
    losses = Losses()
    began = time.perf_counter()
    train(options, losses)
    return output, losses, time.perf_counter() - began


def make_toy_set(root: Path, families: list[str], fixtures: Path) -> None:
    """The toy set's train (32) and val (8) folders, and each family's fixture encoder, under `root`."""
    make_dataset(root / "train", 32, 0)
    make_dataset(root / "val", 8, 1)
    for family in families:
        save_fixture_encoder(root / f"encoder-{family}.pth", fixtures, FAMILIES[family])


def one_run(root: Path, family: str, target: str, steps: int, lr: float, seed: int, args: argparse.Namespace) -> dict:
    """Train one fresh head and score it before and after."""
    device = select_device(args.device)
    config = training_config(NetworkConfig.from_file(args.fixtures / f"{FAMILIES[family]}.json"), target,
                             METRIC_RANGE if target == "metric" else None)
    before = held_out(fresh_network(config, root / f"encoder-{family}.pth", seed), root / "val", args.input_size,
                      device)
    output, losses, seconds = train_head(root, family, target, steps, lr, seed, args)
    after = held_out(load_network(NetworkConfig.from_file(output / "arch.json"), output / "model.pth"),
                     root / "val", args.input_size, device)
    return {"family": family, "target": target, "steps": steps, "lr": lr, "seed": seed,
            "precision": args.precision, "untrained_abs_rel": round(before["abs_rel_fp32"], 4),
            **{k: round(v, 4) for k, v in after.items()},
            "loss_first": round(float(np.mean(losses.losses[:5])), 4),
            "loss_last": round(float(np.mean(losses.losses[-10:])), 4), "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="dinov2,dinov3")
    parser.add_argument("--targets", default="depth")
    parser.add_argument("--steps", default="150")
    parser.add_argument("--lrs", default="1e-3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--input-size", type=int, default=56)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fixtures", type=Path,
                        default=Path(os.environ.get("ANYDEPTH_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures"))
    args = parser.parse_args(argv)
    grid = itertools.product(args.families.split(","), args.targets.split(","),
                             [int(s) for s in args.steps.split(",")], [float(s) for s in args.lrs.split(",")],
                             [int(s) for s in args.seeds.split(",")])
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        make_toy_set(root, args.families.split(","), args.fixtures)
        for family, target, steps, lr, seed in grid:
            print(json.dumps(one_run(root, family, target, steps, lr, seed, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
