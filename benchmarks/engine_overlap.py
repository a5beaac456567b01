"""How well the streaming engine hides reading and writing behind the network, on this machine (a benchmark).

    python benchmarks/engine_overlap.py                      # 200 photos, the tiny fixture network at 28 px
    python benchmarks/engine_overlap.py --photos 50 --fixture tiny_dinov3_sdt --input-size 64

Three timings of the same photos in one run, alternated over `--repeats` rounds (medians reported):
- read+write only: each photo decoded and its outputs written (colour PNG, and `--raw`) from the map the network
  gave it, one after another on one thread;
- network only: the predictor on the photos already decoded, `--batch-size` at a time;
- predict: `run_images`, what `anydepth predict` runs (the engine: decoded ahead, written behind).
Issue 28's goal: predict ≤ (read+write only + network only) / 0.85 with the tiny network at 28 px and tiling off,
where the network is nearly free and the run is all reading and writing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures_dir import fixtures_dir  # noqa: E402

from anydepth_cli.evaluation.sanity import sample_photo  # noqa: E402
from anydepth_cli.inference.onnx_backend import cpu_name  # noqa: E402
from anydepth_cli.inference.tiling import default_tile_config  # noqa: E402
from anydepth_cli.io.images import InputItem, read_image  # noqa: E402
from anydepth_cli.pipelines.photos import OutputOptions, TilingOptions, run_images, write_outputs  # noqa: E402
from anydepth_cli.pipelines.runtime import open_predictor  # noqa: E402


def write_photos(folder: Path, count: int) -> list[InputItem]:
    """`count` 640×480 JPEG crops of the sample photo at random offsets."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(sample_photo()).convert("RGB").resize((1024, 1280))
    rng = np.random.default_rng(0)
    items = []
    for index in range(count):
        left, top = int(rng.integers(0, photo.width - 640)), int(rng.integers(0, photo.height - 480))
        path = folder / f"photo_{index:03d}.jpg"
        photo.crop((left, top, left + 640, top + 480)).save(path, quality=90)
        items.append(InputItem(path, Path(path.name)))
    return items


class Quiet:
    def image_done(self, item, error) -> None:
        if error:
            raise RuntimeError(f"{item.path}: {error}")

    def tiles(self, item, done, total) -> None:
        pass


def read_write_only(items: list[InputItem], maps: list[np.ndarray], outputs: OutputOptions, kind: str) -> float:
    """Each photo decoded and the outputs of its map (the network's, made before) written, one after another."""
    start = time.perf_counter()
    for item, values in zip(items, maps):
        write_outputs(item, read_image(item.path, None), values, kind, None, outputs)
    return time.perf_counter() - start


def network_only(images: list[np.ndarray], predictor, batch_size: int) -> tuple[float, list[np.ndarray]]:
    """The predictor on the decoded photos, `batch_size` at a time: its seconds and the maps."""
    start = time.perf_counter()
    maps = []
    for first in range(0, len(images), batch_size):
        maps += predictor.predict_batch(images[first:first + batch_size])
    return time.perf_counter() - start, maps


def engine_run(items: list[InputItem], predictor, outputs: OutputOptions, batch_size: int) -> float:
    tiling = TilingOptions("off", default_tile_config(predictor.input_size))
    return run_images(items, predictor, outputs, tiling, Quiet(), None, batch_size=batch_size).seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--fixture", default="tiny_dav2_sdt")
    parser.add_argument("--input-size", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--raw", choices=["npy", "png16", "exr"], default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = fixtures_dir()
    predictor, label = open_predictor(None, str(folder / f"{args.fixture}.pth"), folder / f"{args.fixture}.json",
                                      "cpu", "fp32", args.batch_size, args.input_size)
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        items = write_photos(root / "photos", args.photos)
        images = [read_image(item.path, None) for item in items]
        predictor.predict_batch(images[: args.batch_size])  # warm-up
        times: dict[str, list[float]] = {"read_write_only": [], "network_only": [], "predict": []}
        for round_ in range(args.repeats):
            outputs = [OutputOptions(root / f"out{round_}-{n}", "inferno", raw=args.raw) for n in range(2)]
            seconds, maps = network_only(images, predictor, args.batch_size)
            times["network_only"].append(seconds)
            times["read_write_only"].append(read_write_only(items, maps, outputs[0], predictor.output_kind))
            times["predict"].append(engine_run(items, predictor, outputs[1], args.batch_size))
    median = {name: statistics.median(values) for name, values in times.items()}
    bound = (median["read_write_only"] + median["network_only"]) / 0.85
    report = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "model": label,
              "photos": args.photos, "input_size": args.input_size, "batch_size": args.batch_size, "raw": args.raw,
              "median_seconds": {k: round(v, 3) for k, v in median.items()}, "all_seconds": times,
              "overlap_efficiency": round((median["read_write_only"] + median["network_only"]) / median["predict"], 3),
              "goal_seconds": round(bound, 3), "goal_met": bool(median["predict"] <= bound)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
