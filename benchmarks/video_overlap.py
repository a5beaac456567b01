"""Is video I/O hidden behind compute? A whole `run_video` against the network alone (a benchmark).

    python benchmarks/video_overlap.py                       # 100 frames 320x240, input size 140, limit 1.15
    python benchmarks/video_overlap.py --repeats 2 --raw npz --side-by-side
    python benchmarks/video_overlap.py --codec mp4v            # the depth video's codec (default h264)
    python benchmarks/video_overlap.py --device cuda --input-size 518 --size 1280x720

Writes a synthetic clip (shapes moving over a static textured background) and loads the
`tiny_dav2_sdt` fixture network (from $ANYDEPTH_FIXTURES_DIR, else ../shared/fixtures beside
the repository). The network time is `predict_batch` over every frame of the clip, decoded into
memory beforehand, in the same batches `run_video` makes; the video time is `run_video` on the
clip file, with decoding, stabilisation, colour mapping and encoding (and the optional outputs).
Each is measured `--repeats` times, alternating, and the fastest of each is kept, which
discounts other load on a shared machine. Prints both times and their ratio as JSON and exits
with status 1 when the ratio exceeds `--max-ratio`.

On a CPU-only machine the network already keeps every core busy, so the I/O threads can only
use what it leaves idle: the ratio reflects how the I/O's CPU cost (a few ms per 320x240 frame:
decoding, colour mapping, encoding) compares with the network's. The default input size of 140
makes the tiny network cost some tens of ms per frame, as a small real network would on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from anydepth_cli.weights.checkpoint import load_network
from anydepth_cli.inference.precision import select_dtype
from anydepth_cli.inference.predictor import DepthPredictor, select_device
from anydepth_cli.inference.tiling import default_tile_config
from anydepth_cli.io.video import FrameReader
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.pipelines.photos import TilingOptions
from anydepth_cli.pipelines.video import VideoOptions, run_video

FIXTURE = "tiny_dav2_sdt"


def fixtures_dir() -> Path:
    """$ANYDEPTH_FIXTURES_DIR, else ../shared/fixtures relative to the repository."""
    repo = Path(__file__).resolve().parents[1]
    return Path(os.environ.get("ANYDEPTH_FIXTURES_DIR") or repo.parent / "shared" / "fixtures")


def write_clip(path: Path, frames: int, width: int, height: int, fps: float = 25.0) -> None:
    """An mp4 of a disc and a bar moving over a static textured background."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([(xx * 3) % 256, (yy * 5) % 256, 128 + 100 * np.sin(xx / 17) * np.cos(yy / 11)], axis=-1)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit("this OpenCV cannot write mp4v video")
    for t in range(frames):
        phase = t / frames
        disc = (xx - phase * width) ** 2 + (yy - height / 3) ** 2 < (height / 8) ** 2
        bar = np.abs(yy - phase * height) < height / 20
        frame = np.where(disc[..., None], [30.0, 220, 60], np.where(bar[..., None], [220.0, 40, 200], background))
        writer.write(np.ascontiguousarray(frame.clip(0, 255).astype(np.uint8)))
    writer.release()


def network_seconds(predictor: DepthPredictor, frames: list[np.ndarray], batch_size: int) -> float:
    """Seconds `predict_batch` takes over `frames` in batches of `batch_size`."""
    start = time.perf_counter()
    for first in range(0, len(frames), batch_size):
        predictor.predict_batch(frames[first: first + batch_size])
    return time.perf_counter() - start


class _Quiet:
    def started(self, video: Path, total: int | None) -> None:
        pass

    def frames_done(self, count: int) -> None:
        pass

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", default="320x240", help="frame WIDTHxHEIGHT")
    parser.add_argument("--input-size", type=int, default=140)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--raw", choices=("npz", "png16", "exr"))
    parser.add_argument("--codec", choices=("h264", "mp4v", "ffv1"), default="h264")
    parser.add_argument("--side-by-side", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-ratio", type=float, default=1.15)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    folder = fixtures_dir()
    device = select_device(args.device)
    network = load_network(NetworkConfig.from_file(folder / f"{FIXTURE}.json"), folder / f"{FIXTURE}.pth", device)
    predictor = DepthPredictor(network, args.input_size, device, select_dtype(args.precision, device), args.batch_size)
    tiling = TilingOptions("off", default_tile_config(args.input_size))

    with tempfile.TemporaryDirectory(prefix="anydepth-bench-") as temp:
        clip = Path(temp) / "clip.mp4"
        write_clip(clip, args.frames, width, height)
        with FrameReader(clip) as reader:
            frames = [frame for _, frame in reader]
        predictor.predict_batch(frames[: args.batch_size])  # warm-up
        network, video = [], []
        for repeat in range(args.repeats):
            network.append(network_seconds(predictor, frames, args.batch_size))
            options = VideoOptions(Path(temp) / f"out{repeat}", raw=args.raw, side_by_side=args.side_by_side,
                                   codec=args.codec)
            summary = run_video(clip, predictor, options, tiling, _Quiet(), args.batch_size)
            if summary.frames != len(frames):
                raise SystemExit(f"run_video wrote {summary.frames} of {len(frames)} frames")
            video.append(summary.seconds)

    ratio = min(video) / min(network)
    print(json.dumps({
        "frames": len(frames), "size": [width, height], "input_size": args.input_size, "batch_size": args.batch_size,
        "device": device.type, "codec": args.codec, "network_s": round(min(network), 3), "video_s": round(min(video), 3),
        "ratio": round(ratio, 4), "max_ratio": args.max_ratio,
        "network_runs_s": [round(s, 3) for s in network], "video_runs_s": [round(s, 3) for s in video],
    }))
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
