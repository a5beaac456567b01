"""Time per set and peak memory of `anydepth eval --benchmark`, on generated sets at the real image sizes (a
benchmark, not a test).

    python benchmarks/eval_benchmarks.py                                   # tiny fixture network, CPU, 4 images a set
    python benchmarks/eval_benchmarks.py --model anydepth-dav2-vitb --device cuda --images 40
    python benchmarks/eval_benchmarks.py --sets eth3d --images 3 --tile auto
    python benchmarks/eval_benchmarks.py --input-size 56                  # network cheap: reading and scoring show

Each set is generated in its real layout and at its real image size (NYU 480×640, KITTI 375×1242, ETH3D
4032×6048, ScanNet 480×640, DIODE 768×1024) as a tar in a temporary folder. `--model` builds that registry
model's architecture with random weights (no download; a network's speed does not depend on its weights);
without it the shared tiny fixture network runs. For each set a fresh subprocess runs the benchmark pipeline
(`SetRun`: reading ahead, inference, scoring in the background) and reports its seconds, images/s, the time
the standard set would take at that rate and the subprocess's peak resident memory; then the same samples one
stage at a time (read all, predict all, score all, one sample held at a time), whose sum is what the pipeline
would take without overlap. Prints one JSON object per set.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
FIXTURE = "tiny_dinov3_sdt"
SIZES = {"nyu": (480, 640), "kitti": (375, 1242), "eth3d": (4032, 6048), "scannet": (480, 640), "diode": (768, 1024)}


def _photo(height: int, width: int, rng: np.random.Generator) -> bytes:
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _depth(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    x = np.linspace(0, 1, width, dtype=np.float32)[None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    return (1 + 4 * (0.3 * x + 0.7 * y) * rng.uniform(0.8, 1.2)).astype(np.float32)


def _png16(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def sample_files(name: str, index: int, rng: np.random.Generator) -> dict[str, bytes]:
    """One sample's files, named as the set names them."""
    height, width = SIZES[name]
    depth = _depth(height, width, rng)
    photo = _photo(height, width, rng)
    if name == "nyu":
        return {f"test/scene/rgb_{index:04d}.png": photo, f"test/scene/depth_{index:04d}.png": _png16(depth * 1000)}
    if name == "kitti":
        drive = "2011_09_26_drive_0002_sync"
        return {f"2011_09_26/{drive}/image_02/data/{index:010d}.png": photo,
                f"{drive}/proj_depth/groundtruth/image_02/{index:010d}.png": _png16(depth * 256)}
    if name == "eth3d":
        return {f"rgb/office/images/dslr_images/DSC_{index:04d}.JPG": photo,
                f"depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_{index:04d}.JPG": depth.tobytes()}
    if name == "scannet":
        return {f"scene0000_00/color/{index:06d}.jpg": photo, f"scene0000_00/depth/{index:06d}.png": _png16(depth * 1000)}
    base = f"indoors/scene_00000/scan_00000/{index:05d}"
    return {f"{base}.png": photo, f"{base}_depth.npy": _npy(depth[..., None]),
            f"{base}_depth_mask.npy": _npy(np.ones((height, width, 1), np.float32))}


def write_set(root: Path, name: str, count: int) -> None:
    """`count` samples of set `name` as its standard tar under `root`, written one sample at a time."""
    from anydepth_cli.datasets.registry import BENCHMARKS

    path = root / BENCHMARKS[name].location
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as archive:
        for index in range(count):
            for member, data in sample_files(name, index, rng).items():
                info = tarfile.TarInfo("./" + member)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


def build_predictor(model: str | None, device: str, batch_size: int, input_size: int | None = None):
    """The registry model's architecture with random weights, or the tiny fixture network, ready for inference."""
    from anydepth_cli.inference.precision import select_dtype
    from anydepth_cli.inference.predictor import DepthPredictor, select_device
    from anydepth_cli.models.config import NetworkConfig
    from anydepth_cli.models.fuse import prepare_for_inference
    from anydepth_cli.models.network import build_network
    from anydepth_cli.models.registry import get_model
    from anydepth_cli.weights.checkpoint import load_network

    target = select_device(device)
    if model is None:
        folder = Path(os.environ.get("ANYDEPTH_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures")
        network, size = load_network(NetworkConfig.from_file(folder / f"{FIXTURE}.json"), folder / f"{FIXTURE}.pth", target), 518
    else:
        spec = get_model(model)
        network, size = build_network(spec.config).to(target), spec.input_size
    dtype = select_dtype("auto", target)
    return DepthPredictor(prepare_for_inference(network, dtype), input_size or size, target, dtype, batch_size)


def _predict(predictor, images: list[np.ndarray], tile: str, tiles: dict) -> list[np.ndarray]:
    """The images' maps in one network call, or one tiled image's map, as `--tile` says."""
    from anydepth_cli.inference.tiling import predict_tiled, should_tile

    if tile == "on" or (tile == "auto" and should_tile(*images[0].shape[:2], predictor.input_size)):
        return [predict_tiled(images[0], predictor, tiles["model"]).values]
    return predictor.predict_batch(images)


def _measure(root: Path, name: str, args: argparse.Namespace, conn) -> None:
    from anydepth_cli.bench.measure import peak_rss_bytes
    from anydepth_cli.datasets.archive import locate
    from anydepth_cli.datasets.family import Reader
    from anydepth_cli.datasets.registry import BENCHMARKS
    from anydepth_cli.evaluation.benchmark_run import RunOptions, SetRun, load_sample
    from anydepth_cli.evaluation.protocols import PROTOCOLS
    from anydepth_cli.pipelines.runtime import tile_config

    module = BENCHMARKS[name]
    predictor = build_predictor(args.model, args.device, args.batch_size, args.input_size)
    files = locate(root, module.location)
    samples = module.find(files)
    tiles = {"model": tile_config(predictor)} if args.tile != "off" else {}
    options = RunOptions({"model": predictor.output_kind}, args.batch_size, args.tile, tiles)
    predictor.predict_batch([np.zeros((64, 64, 3), np.uint8)])  # warm-up, outside the timings
    result = SetRun(module, {"model": predictor}, options).run(files, samples)
    peak = peak_rss_bytes()
    stages = dict.fromkeys(("read", "predict", "score"), 0.0)
    step = args.batch_size if args.tile == "off" else 1
    for first in range(0, len(samples), step):  # batched as the pipeline batches, one stage after the other
        times = [time.perf_counter()]
        batch = [load_sample(Reader(module, files), sample) for sample in samples[first: first + step]]
        times.append(time.perf_counter())
        maps = _predict(predictor, [loaded.rgb for loaded in batch], args.tile, tiles)
        times.append(time.perf_counter())
        for loaded, values in zip(batch, maps):
            PROTOCOLS[name].score(values, loaded.depth, loaded.valid, predictor.output_kind)
        times.append(time.perf_counter())
        for stage, (before, after) in zip(stages, zip(times, times[1:])):
            stages[stage] += after - before
    conn.send({"set": name, "images": result.scored, "failed": len(result.failures), "seconds": result.seconds,
               "images_per_s": result.scored / result.seconds, "tiled": result.tiled,
               "standard_set_minutes": module.standard_count * result.seconds / result.scored / 60,
               "stages_seconds": stages, "stages_sum_seconds": sum(stages.values()), "peak_rss_mb": peak / 2**20})
    conn.close()


def run(root: Path, name: str, args: argparse.Namespace) -> dict:
    """One set's measurement from a fresh subprocess."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_measure, args=(root, name, args, send))
    process.start()
    send.close()
    try:
        return receive.recv()
    except EOFError:
        raise RuntimeError(f"the benchmark subprocess for {name} died with exit code {process.exitcode}") from None
    finally:
        process.join()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="nyu,kitti,eth3d,scannet,diode")
    parser.add_argument("--images", type=int, default=4, help="samples generated per set")
    parser.add_argument("--model", help="registry architecture with random weights (default: the tiny fixture network)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--input-size", type=int, help="shorter side the network sees (default: the model's own)")
    parser.add_argument("--tile", default="off", choices=("off", "on", "auto"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anydepth-eval-bench-") as folder:
        for name in args.sets.split(","):
            write_set(Path(folder), name, args.images)
            print(json.dumps(run(Path(folder), name, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
