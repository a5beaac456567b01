"""`anydepth predict CLIP` end to end, as a subprocess, on a small fixture network.

The network runs at `--input-size 70` to keep each run to a few seconds on a CPU.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from anydepth_cli.io.video import probe_video
from anydepth_cli.io.writers import read_png16
from conftest import run_cli, save_photo, tiny_model_args
from test_video import make_clip

pytestmark = pytest.mark.slow

FAST = ["--input-size", "70", *tiny_model_args()]


def test_clip_gives_a_depth_video_of_the_same_frame_count_size_and_fps(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=20, size=(96, 64), fps=12.0)
    out = tmp_path / "out"
    result = run_cli("predict", clip, "-o", out, "--side-by-side", "--raw", "png16", *FAST)
    assert result.returncode == 0, result.stderr
    assert "frames/s" in result.stderr and "Traceback" not in result.stderr
    depth = probe_video(out / "clip_depth.mp4")
    assert (depth.frame_count, depth.width, depth.height, depth.fps) == (20, 96, 64, 12.0)
    side = probe_video(out / "clip_side.mp4")
    assert (side.frame_count, side.width, side.height) == (20, 192, 64)
    frames = sorted((out / "clip_depth16").iterdir())
    assert [p.name for p in frames] == [f"clip_depth16.{i:06d}.png" for i in range(1, 21)]
    assert read_png16(frames[0]).shape == (64, 96)
    assert sorted(p.name for p in out.iterdir()) == ["clip_depth.mp4", "clip_depth16", "clip_side.mp4"]


def test_raw_npz_frame_selection_and_tiling(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=20, size=(96, 64), fps=12.0)
    out = tmp_path / "out"
    result = run_cli("predict", clip, "-o", out, "--raw", "npz", "--start", "2", "--stride", "3",
                     "--max-frames", "5", "--tile", "on", "--tile-size", "48", "--overlap", "12", *FAST)
    assert result.returncode == 0, result.stderr
    assert "(tiled)" in result.stderr
    archive = np.load(out / "clip_depth.npz")
    assert archive["depth"].shape == (5, 64, 96) and archive["depth"].dtype == np.float16
    assert archive["frame_index"].tolist() == [2, 5, 8, 11, 14] and float(archive["fps"]) == 4.0
    depth = probe_video(out / "clip_depth.mp4")
    assert (depth.frame_count, depth.fps) == (5, 4.0)


def test_truncated_clip_writes_what_decodes_and_warns(tmp_path):
    clip = tmp_path / "cut.avi"
    make_clip(clip, frames=24, fourcc="MJPG")
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    out = tmp_path / "out"
    result = run_cli("predict", clip, "-o", out, "--no-stabilize", *FAST)
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(out / "cut_depth.mp4"))
    written = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert 0 < written < 24
    assert "warning:" in result.stderr and f"decoded {written} of the 24 frames" in " ".join(result.stderr.split())


@pytest.mark.parametrize("case", ["unreadable", "raw-npy-with-photo", "raw-npy", "stride-for-photo", "start-past-end"])
def test_video_errors_are_one_line(tmp_path, case):
    clip = tmp_path / "clip.mp4"
    photo = save_photo(tmp_path / "p.jpg", 32, 32)
    if case == "unreadable":
        clip.write_bytes(b"not a video at all")
    else:
        make_clip(clip, frames=3)
    args, code, text = {
        "unreadable": ([clip], 1, "cannot read video"),
        "raw-npy-with-photo": ([clip, photo, "--raw", "npy"], 2, "--raw npy only applies to photos"),
        "raw-npy": ([clip, "--raw", "npy"], 2, "--raw npz"),
        "stride-for-photo": ([photo, "--stride", "2"], 2, "--stride only apply to videos"),
        "start-past-end": ([clip, "--start", "3"], 2, "past the end"),
    }[case]
    result = run_cli("predict", *args, "-o", tmp_path / "out", *FAST)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and text in " ".join(result.stderr.split())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_point_clouds_of_every_nth_frame(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=12, size=(96, 64), fps=12.0)
    out = tmp_path / "out"
    result = run_cli("predict", clip, "-o", out, "--start", "1", "--stride", "2", "--pointcloud", "--pc-stride", "2",
                     "--fov", "70", *FAST)
    assert result.returncode == 0, result.stderr
    clouds = sorted(p.name for p in (out / "clip_clouds").iterdir())
    assert clouds == ["000001.ply", "000005.ply", "000009.ply"]
    header = (out / "clip_clouds" / "000005.ply").read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header and "property uchar red" in header
    assert int(header.split("element vertex ")[1].split()[0]) > 0
