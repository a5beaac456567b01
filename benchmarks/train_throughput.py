"""Training throughput of `anydepth train`: images/s and peak memory of head-only steps (a benchmark, not a test).

    python benchmarks/train_throughput.py                          # default model at 518², CPU batch 2 / GPU bf16 batch 16
    python benchmarks/train_throughput.py --steps 30 --batch-size 32 --precision bf16

The network is the default model's architecture (anydepth-dav2-vitb: ViT-B/14 encoder, SDT-128 head) with
random weights, so nothing is downloaded: a random backbone state dict goes in through --encoder-weights and
the head starts fresh. The data are generated 640×480 photos with depth. It runs the real training loop
(data loading and augmentation, frozen encoder under no_grad, head forward and backward, AdamW, no
checkpoint until the end) and reports the median images/s over the steps after the first `--skip`, and the
peak memory: CUDA peak allocated on a GPU, the process's peak resident set on the CPU. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.models.registry import DEFAULT_MODEL, get_model
from anydepth_cli.training.loop import train
from anydepth_cli.training.options import TrainOptions
from anydepth_cli.training.report import Reporter


class StepTimes(Reporter):
    """Keeps the images/s of every step."""

    def __init__(self) -> None:
        self.speeds: list[float] = []

    def step(self, step: int, loss: float, lr: float, images_per_second: float) -> None:
        self.speeds.append(images_per_second)
        print(f"step {step}: {images_per_second:.2f} img/s, loss {loss:.4f}", file=sys.stderr, flush=True)


def make_data(folder: Path, count: int) -> Path:
    """`count` random smooth 640×480 photos with a depth map each."""
    rng = np.random.default_rng(0)
    (folder / "image").mkdir(parents=True)
    (folder / "depth").mkdir()
    for i in range(count):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(folder / "image" / f"{i:04d}.png")
        np.save(folder / "depth" / f"{i:04d}.npy", rng.uniform(1, 10, (6, 8)).repeat(80, 0).repeat(80, 1).astype(np.float32))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=16 if gpu else 2)
    parser.add_argument("--precision", default="bf16" if gpu else "fp32")
    parser.add_argument("--input-size", type=int, default=518)
    parser.add_argument("--steps", type=int, default=20 if gpu else 4)
    parser.add_argument("--skip", type=int, default=3 if gpu else 1, help="first steps left out of the median")
    parser.add_argument("--workers", type=int, default=8 if gpu else 1)
    args = parser.parse_args(argv)

    config = get_model(DEFAULT_MODEL).config
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        encoder = root / "encoder.pth"
        torch.save(DepthNetwork(config).encoder.state_dict(), encoder)
        data = make_data(root / "data", max(16, args.batch_size * 2))
        times = StepTimes()
        options = TrainOptions(data=(data,), output=root / "run", model=DEFAULT_MODEL, encoder_weights=encoder,
                               steps=args.steps, batch_size=args.batch_size, input_size=args.input_size,
                               precision=args.precision, device=args.device, workers=args.workers,
                               save_every=10 ** 9)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        train(options, times)
    measured = times.speeds[args.skip:] or times.speeds
    peak = (torch.cuda.max_memory_allocated() if gpu and args.device != "cpu"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result = {
        "model": DEFAULT_MODEL, "device": torch.cuda.get_device_name() if gpu and args.device != "cpu" else "cpu",
        "threads": torch.get_num_threads(), "precision": args.precision, "batch_size": args.batch_size,
        "input_size": args.input_size, "steps": args.steps, "images_per_second": statistics.median(measured),
        "peak_memory_mb": peak / 2**20, "peak_memory_kind": "cuda allocated" if gpu and args.device != "cpu" else "cpu rss",
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
