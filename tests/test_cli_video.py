"""`anydepth predict CLIP` end to end, as a subprocess, on a small fixture network.

The network runs at `--input-size 70` to keep each run to a few seconds on a CPU.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from anydepth_cli.io.video import probe_video
from anydepth_cli.io.writers import read_png16
from conftest import cli_env, run_cli, save_photo, tiny_model_args
from test_video import decode, make_clip

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
    # the camera every frame was unprojected with, as photos record it (default 60° horizontal field of view)
    camera = json.loads(str(archive["camera"]))
    assert camera["fx"] == pytest.approx(48 / np.tan(np.radians(30))) and camera["cx"] == 47.5
    assert camera["units"].startswith("relative") and camera["metric"] is False and camera["width"] == 96
    assert camera["model"].startswith("tiny_dav2_sdt.pth")
    assert not (out / "clip_camera.json").exists()  # no clouds, no metres: no sidecar, as for photos
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
    record = json.loads((out / "clip_camera.json").read_text())
    assert record["fx"] == pytest.approx(48 / np.tan(np.radians(35))) and record["focal_source"] == "--fov 70"
    assert f"comment fx {json.dumps(record['fx'])}\n" in header and 'comment axes "opengl"' in header


def _exr(path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path)) as image:
        return image.channels()["Y"].pixels.copy()


def _listing(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_a_folder_of_two_clips_and_a_photo_then_a_resumed_run_over_a_killed_ones_leftovers(tmp_path):
    shoot, out = tmp_path / "shoot", tmp_path / "out"
    (shoot / "day2").mkdir(parents=True)
    make_clip(shoot / "a.mp4", frames=8, size=(96, 64), fps=12.0)
    make_clip(shoot / "day2" / "b.avi", frames=5, size=(64, 48), fps=10.0, fourcc="MJPG")
    save_photo(shoot / "still.jpg", 80, 60)
    (shoot / "notes.txt").write_text("not an input")
    args = ["predict", shoot, "-o", out, "--raw", "exr", "--side-by-side", *FAST]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert "1 image(s) and 2 video(s)" in text and "ignored 1 other file(s)" in text and "Traceback" not in text
    assert "frames of a.mp4" in text and "frames of day2/b.avi" in text  # a progress line per clip
    clips = {"a": (8, 96, 64, 12.0), "day2/b": (5, 64, 48, 10.0)}
    expected = ["still_depth.exr", "still_depth.png", "still_side.png", "day2"]
    for name, (frames, width, height, fps) in clips.items():
        for kind, video_width in (("depth", width), ("side", 2 * width)):
            codec, decoded, rate = decode(out / f"{name}_{kind}.mp4")
            assert (codec, len(decoded), decoded[0].shape[:2], rate) == ("h264", frames, (height, video_width), fps)
        stem = name.split("/")[-1] + "_depth"
        exrs = [f"{name}_depth/{stem}.{n:06d}.exr" for n in range(1, frames + 1)]
        expected += [f"{name}_depth.mp4", f"{name}_side.mp4", f"{name}_depth", *exrs]
        maps = [_exr(out / exr) for exr in exrs]
        assert all(m.shape == (height, width) and m.dtype == np.float32 and np.isfinite(m).all() for m in maps)
    assert _listing(out) == sorted(expected)
    assert _exr(out / "still_depth.exr").shape == (60, 80)

    # A killed run's leftovers, an incomplete clip and a broken one: the rerun cleans, redoes b, names the broken.
    debris = [out / ".a_depth.tmp-0123abcd.mp4", out / "day2" / ".b_depth.tmp-89abcdef",
              out / ".still_depth.tmp-00ff00ff.png"]
    debris[0].write_bytes(b"half a video")
    debris[1].mkdir()
    (debris[1] / "b_depth.000001.exr").write_bytes(b"half")
    debris[2].write_bytes(b"half")
    (out / ".mine").write_text("not ours")
    shutil.rmtree(out / "day2" / "b_depth")
    (shoot / "broken.mp4").write_bytes(b"not a video at all")
    kept = (out / "a_depth.mp4").stat().st_mtime_ns
    result = run_cli(*args, "--skip-existing")
    assert result.returncode == 1, result.stderr
    text = " ".join(result.stderr.split())
    assert "skipped 2 already done" in text and "cleaned 3 temporary file(s)" in text and "failed 1" in text
    assert f"failed {shoot / 'broken.mp4'}: cannot read video" in text and "frames of day2/b.avi" in text
    assert (out / "a_depth.mp4").stat().st_mtime_ns == kept
    assert _listing(out) == sorted(expected + [".mine"])


def test_a_shard_takes_whole_clips_and_one_without_any_stops_at_once(tmp_path):
    shoot, out = tmp_path / "shoot", tmp_path / "out"
    shoot.mkdir()
    for name in ("a", "b", "c"):
        make_clip(shoot / f"{name}.mp4", frames=3)
    result = run_cli("predict", shoot, "-o", out, "--shard", "1/2", *FAST)  # clips sorted a, b, c: b is share 1
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "anydepth-shard-1-of-2.json").read_text())["inputs"] == ["b.mp4"]
    assert probe_video(out / "b_depth.mp4").frame_count == 3 and not (out / "a_depth.mp4").exists()
    idle = run_cli("predict", shoot / "a.mp4", "-o", tmp_path / "idle", "--shard", "1/2", *FAST)
    assert idle.returncode == 0 and "nothing to do" in idle.stderr, idle.stderr
    assert json.loads((tmp_path / "idle" / "anydepth-shard-1-of-2.json").read_text())["inputs"] == []


def test_without_pyav_the_depth_video_is_mp4v_and_one_line_says_so(tmp_path):
    blocker = tmp_path / "no-pyav"
    blocker.mkdir()
    (blocker / "av.py").write_text("raise ImportError('PyAV is blocked for this test')\n")
    env = cli_env(PYTHONPATH=str(blocker))
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3)
    result = run_cli("predict", clip, "-o", tmp_path / "out", *FAST, env=env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "mp4v" in line]
    assert len(lines) == 1 and "PyAV is not installed" in lines[0], result.stderr
    assert decode(tmp_path / "out" / "clip_depth.mp4")[0] == "FMP4"
    refused = run_cli("predict", clip, "-o", tmp_path / "out2", "--codec", "ffv1", *FAST, env=env)
    assert refused.returncode == 2 and "--codec ffv1 needs PyAV" in " ".join(refused.stderr.split())
