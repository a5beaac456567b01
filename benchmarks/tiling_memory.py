"""Peak memory of tiled inference on a large generated image (a benchmark, not a timed test).

    python benchmarks/tiling_memory.py                       # 48 MP, fixture network, limit 3000 MB
    python benchmarks/tiling_memory.py --megapixels 12 --max-rss-mb 2000
    python benchmarks/tiling_memory.py --predictor some.module:build_predictor

`run(build_predictor, megapixels)` builds a predictor with `build_predictor()` in a fresh
subprocess, generates a 4:3 uint8 image of about `megapixels` million pixels there, runs
`predict_tiled` with the default tile configuration for the predictor's input size and the
confidence output on (its worst case for memory), and returns the subprocess's peak resident set size (everything it held: interpreter, libraries,
weights, image, maps), the seconds `predict_tiled` took and the number of tiles. The script
prints that as JSON and exits with status 1 when the peak exceeds `--max-rss-mb`.

`--predictor module:callable` names a zero-argument callable returning a `MapPredictor`;
without it the tiny SDT fixture network from the shared fixtures runs through the real
predictor (preprocessing at 518 px, batched tiles, outputs upsampled to each tile's size).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from anydepth_cli.inference.predictor import MapPredictor

REPO = Path(__file__).resolve().parents[1]
FIXTURE = "tiny_dav2_sdt"


def build_fixture_predictor() -> MapPredictor:
    """The default predictor: the shared tiny SDT fixture network, loaded as the CLI loads weights."""
    from anydepth_cli.weights.checkpoint import load_network
    from anydepth_cli.inference.predictor import DepthPredictor
    from anydepth_cli.models.config import NetworkConfig
    from anydepth_cli.models.fuse import prepare_for_inference

    folder = Path(os.environ.get("ANYDEPTH_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures")
    network = load_network(NetworkConfig.from_file(folder / f"{FIXTURE}.json"), folder / f"{FIXTURE}.pth")
    return DepthPredictor(prepare_for_inference(network), input_size=518)


def synthetic_image(height: int, width: int) -> np.ndarray:
    """A uint8 RGB test image (gradients and rings), generated strip by strip."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    x = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
    for top in range(0, height, 256):
        bottom = min(top + 256, height)
        y = ((np.arange(top, bottom, dtype=np.float32) + 0.5) / height)[:, None]
        rings = 0.5 + 0.5 * np.sin(40.0 * np.hypot(x - 0.4, y - 0.6))
        image[top:bottom, :, 0] = 255 * x * rings
        image[top:bottom, :, 1] = 255 * y * (1.0 - rings)
        image[top:bottom, :, 2] = 255 * rings
    return image


def _measure(build_predictor: Callable[[], MapPredictor], megapixels: float, conn) -> None:
    from anydepth_cli.bench.measure import peak_rss_bytes
    from anydepth_cli.inference.tiling import default_tile_config, predict_tiled

    predictor = build_predictor()
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    height = round(width * 3 / 4)
    image = synthetic_image(height, width)
    start = time.perf_counter()
    result = predict_tiled(image, predictor, default_tile_config(predictor.input_size), confidence=True)
    seconds = time.perf_counter() - start
    conn.send({"peak_rss_mb": peak_rss_bytes() / 2**20, "seconds": seconds, "tiles": result.tiles})
    conn.close()


def run(build_predictor: Callable[[], MapPredictor], megapixels: float) -> dict:
    """Peak RSS (MB), seconds and tile count of one tiled prediction, measured in a fresh
    subprocess. `build_predictor` must be picklable (a module-level callable)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_measure, args=(build_predictor, megapixels, send))
    process.start()
    send.close()
    try:
        measurement = receive.recv()
    except EOFError:
        measurement = None
    process.join()
    if measurement is None:
        raise RuntimeError(f"the benchmark subprocess died with exit code {process.exitcode}")
    return measurement


def _load(spec: str) -> Callable[[], MapPredictor]:
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--predictor wants module:callable, got {spec!r}")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=48.0)
    parser.add_argument("--max-rss-mb", type=float, default=3000.0)
    parser.add_argument("--predictor", help="module:callable building the predictor (default: the tiny SDT fixture network)")
    args = parser.parse_args(argv)
    build = _load(args.predictor) if args.predictor else build_fixture_predictor
    measurement = run(build, args.megapixels)
    measurement.update(megapixels=args.megapixels, max_rss_mb=args.max_rss_mb)
    print(json.dumps(measurement))
    return 0 if measurement["peak_rss_mb"] <= args.max_rss_mb else 1


if __name__ == "__main__":
    sys.exit(main())
