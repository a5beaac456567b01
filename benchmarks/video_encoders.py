"""How fast each depth-video codec encodes, and how large its files are (a benchmark).

    python benchmarks/video_encoders.py                      # 120 frames of 640x480
    python benchmarks/video_encoders.py --size 1280x720 --frames 60 --repeats 3

Encodes a synthetic depth picture sequence (a colour-mapped slanted plane with a moving ripple)
through `open_video_writer` with each `--codec` (h264 and ffv1 through PyAV, mp4v through OpenCV;
ffv1 gets grey pictures, as `--codec ffv1` writes),
and, when the imageio-ffmpeg package is installed, through its ffmpeg executable with the same
libx264 settings, the alternative to PyAV we compared. Each is timed `--repeats` times and the
fastest kept, which discounts other load on a shared machine; prints frames per second and file
sizes as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from anydepth_cli.io.encoders import H264_OPTIONS, open_video_writer
from anydepth_cli.io.writers import colorize

FPS = 25.0


def depth_pictures(frames: int, width: int, height: int) -> list[np.ndarray]:
    """RGB depth pictures: a slanted plane with a ripple moving across it, coloured with inferno."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return [colorize(yy / height + 0.2 * np.sin((xx + 5 * t) / 30)) for t in range(frames)]


def ours(codec: str) -> Callable[[Path, list[np.ndarray]], Path]:
    """Our writer for `codec`; FFV1 gets the grey pictures `--codec ffv1` writes."""

    def encode(folder: Path, pictures: list[np.ndarray]) -> Path:
        height, width = pictures[0].shape[:2]
        grey = codec == "ffv1"
        sink, note = open_video_writer(folder / codec, FPS, (width, height), codec, grey=grey)
        if note:
            raise SystemExit(f"{codec}: {note}")
        for picture in pictures:
            sink.put(np.repeat(picture[..., :1], 3, axis=2) if grey else picture)
        return sink.close()

    return encode


def through_imageio_ffmpeg(folder: Path, pictures: list[np.ndarray]) -> Path:
    import imageio_ffmpeg as iio

    height, width = pictures[0].shape[:2]
    path = folder / "imageio.mp4"
    writer = iio.write_frames(str(path), (width, height), fps=FPS, codec="libx264", pix_fmt_out="yuv420p",
                              quality=None, macro_block_size=2,
                              output_params=["-preset", H264_OPTIONS["preset"], "-crf", H264_OPTIONS["crf"]])
    writer.send(None)
    for picture in pictures:
        writer.send(picture)
    writer.close()
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="640x480", help="frame WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    pictures = depth_pictures(args.frames, width, height)
    encoders = {"h264 (PyAV)": ours("h264"), "mp4v (OpenCV)": ours("mp4v"), "ffv1 (PyAV)": ours("ffv1")}
    try:
        import imageio_ffmpeg  # noqa: F401

        encoders["h264 (imageio-ffmpeg)"] = through_imageio_ffmpeg
    except ImportError:
        pass
    results = {}
    with tempfile.TemporaryDirectory(prefix="anydepth-bench-") as temp:
        for name, encode in encoders.items():
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                path = encode(Path(temp), pictures)
                best = min(best, time.perf_counter() - start)
            results[name] = {"fps": round(args.frames / best, 1), "kB": round(path.stat().st_size / 1e3, 1)}
    print(json.dumps({"frames": args.frames, "size": [width, height], "encoders": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
