"""`anydepth predict` end to end, as a subprocess, on a small fixture network."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from anydepth_cli.io.writers import read_png16
from conftest import cli_env, run_cli, save_photo, tiny_model_args
from fixtures_dir import fixtures_dir

pytestmark = pytest.mark.slow


def assert_one_line_error(result, code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert text in result.stderr


def test_single_photo_writes_depth_raw_and_side_by_side(tmp_path, sample_photo):
    result = run_cli("predict", sample_photo, "-o", tmp_path, "--raw", "png16", "--side-by-side",
                     "--tile", "off", *tiny_model_args())
    assert result.returncode == 0, result.stderr
    width, height = Image.open(sample_photo).size
    color = Image.open(tmp_path / "grace_hopper_depth.png")
    assert color.size == (width, height) and color.mode == "RGB"
    assert Image.open(tmp_path / "grace_hopper_side.png").size == (2 * width, height)
    raw = read_png16(tmp_path / "grace_hopper_depth16.png")
    assert raw.shape == (height, width) and np.ptp(raw) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grace_hopper_depth.png", "grace_hopper_depth16.png", "grace_hopper_side.png"]


@pytest.mark.parametrize("declared", ["depth", "disparity"])
def test_pictures_show_near_bright_for_either_declared_kind(tmp_path, sample_photo, declared):
    fixture = fixtures_dir() / "tiny_dav2_sdt"
    config = json.loads(fixture.with_suffix(".json").read_text())["config"]
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({**config, "output": declared}))
    out = tmp_path / "out"
    result = run_cli("predict", sample_photo, "-o", out, "--raw", "npy", "--grayscale", "--tile", "off",
                     "--checkpoint", fixture.with_suffix(".pth"), "--arch", arch)
    assert result.returncode == 0, result.stderr
    assert f"outputs {declared} (large = {'far' if declared == 'depth' else 'near'})" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(["grace_hopper_depth.png", f"grace_hopper_{declared}.npy"])
    raw = np.load(out / f"grace_hopper_{declared}.npy").ravel()
    grey = np.asarray(Image.open(out / "grace_hopper_depth.png"))[..., 0].ravel().astype(float)
    correlation = np.corrcoef(grey, raw)[0, 1]
    assert correlation < -0.9 if declared == "depth" else correlation > 0.9
    assert raw.min() >= 0.001  # the SDT's activation, relu(x) + 0.001, whatever the declaration


def test_folder_with_a_corrupt_file_writes_the_rest_and_exits_1(tmp_path):
    photos = tmp_path / "photos"
    sizes = {"a.jpg": (200, 150), "sub/b.png": (120, 160), "sub/deeper/c.jpg": (90, 90)}
    for i, (name, size) in enumerate(sizes.items()):
        save_photo(photos / name, *size, seed=i)
    broken = photos / "sub" / "broken.jpg"
    broken.write_bytes((photos / "a.jpg").read_bytes()[:300])
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    result = run_cli("predict", photos, "-o", out, "--raw", "npy", *tiny_model_args())
    assert result.returncode == 1, result.stderr
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    for name, (width, height) in sizes.items():
        stem = name.rsplit(".", 1)[0]
        assert Image.open(out / f"{stem}_depth.png").size == (width, height)
        assert np.load(out / f"{stem}_depth.npy").shape == (height, width)
    assert not list(out.rglob("broken*")), "nothing may be written for the corrupt file"
    assert not list(out.rglob(".*tmp*")), "no temporary files may be left behind"


def test_skip_existing_resumes_without_rewriting(tmp_path):
    photo = save_photo(tmp_path / "in" / "p.jpg", 64, 48)
    out = tmp_path / "out"
    assert run_cli("predict", photo, "-o", out, *tiny_model_args()).returncode == 0
    written = out / "p_depth.png"
    written.write_bytes(b"marker")
    result = run_cli("predict", photo, "-o", out, "--skip-existing", *tiny_model_args())
    assert result.returncode == 0 and "1 already done" in result.stderr
    assert written.read_bytes() == b"marker"


@pytest.mark.parametrize("case", ["missing", "empty-folder", "output-is-file", "unknown-model", "arch-alone",
                                  "bad-cmap", "bad-checkpoint"])
def test_usage_errors_are_one_line_with_exit_2(tmp_path, case):
    photo = save_photo(tmp_path / "p.jpg", 32, 32)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.pth").write_bytes(b"junk")
    args, text = {
        "missing": (["predict", tmp_path / "nope.jpg"], "nope.jpg"),
        "empty-folder": (["predict", tmp_path / "empty"], "no images"),
        "output-is-file": (["predict", photo, "-o", tmp_path / "file", *tiny_model_args()], "is a file"),
        "unknown-model": (["predict", photo, "-m", "no-such-model", "-o", tmp_path / "o"], "unknown model"),
        "arch-alone": (["predict", photo, "--arch", tmp_path / "a.json", "-o", tmp_path / "o"], "--checkpoint"),
        "bad-cmap": (["predict", photo, "--cmap", "nocolours", *tiny_model_args()], "unknown --cmap"),
        "bad-checkpoint": (["predict", photo, "--checkpoint", tmp_path / "bad.pth", "--arch",
                            tiny_model_args()[3], "-o", tmp_path / "o"], "bad.pth"),
    }[case]
    assert_one_line_error(run_cli(*args, cwd=tmp_path), 2, text)


def test_oversized_image_fails_with_a_hint(tmp_path):
    photo = save_photo(tmp_path / "big.png", 300, 200)
    result = run_cli("predict", photo, "-o", tmp_path / "o", "--max-pixels", "1000", *tiny_model_args())
    assert_one_line_error(result, 1, "--max-pixels")


def test_huge_image_names_the_default_limit_and_the_option(tmp_path):
    # A PNG header of 20000 x 15000 = 300 M pixels, more than twice the default --max-pixels (120 M),
    # where Pillow's own decompression-bomb check fires first.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    photo = tmp_path / "huge.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 15000, 8, 2, 0, 0, 0))
                      + chunk(b"IEND", b""))
    result = run_cli("predict", photo, "-o", tmp_path / "o", *tiny_model_args())
    assert_one_line_error(result, 1, "300000000 pixels, more than --max-pixels 120000000")
    assert "pass --max-pixels 300000000" in result.stderr and "240000000" not in result.stderr


def test_ctrl_c_is_one_line_exit_130_and_leaves_only_whole_files(tmp_path):
    photos = tmp_path / "photos"
    total = 300
    for i in range(total):
        save_photo(photos / f"p{i:03d}.png", 128, 96, seed=i)
    out = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "anydepth_cli", "predict", photos, "-o", out, *tiny_model_args()],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.monotonic() + 120
    while not list(out.glob("*_depth.png")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "error: interrupted"
    assert "Aborted" not in stderr and "Traceback" not in stderr, stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no temporary files may be left behind"
    written = list(out.glob("*_depth.png"))
    assert 0 < len(written) < total
    for path in written:
        with Image.open(path) as image:
            image.load()


def read_ply_header(path) -> tuple[list[str], int]:
    """The PLY header lines and the byte offset where vertex data starts."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines(), end


def test_tiled_photo_with_confidence_and_point_cloud(tmp_path):
    photos = tmp_path / "in"
    save_photo(photos / "wide.png", 330, 250, seed=3)
    save_photo(photos / "sub" / "small.jpg", 90, 60, seed=4)
    out = tmp_path / "out"
    result = run_cli("predict", photos, "-o", out, "--input-size", "70", "--tile", "--tile-size", "140",
                     "--confidence", "--raw", "npy", "--side-by-side", "--pointcloud", "--fov", "60",
                     "--max-points", "5000", "--normals", *tiny_model_args())
    assert result.returncode == 0, result.stderr
    assert "tiled 2 image(s)" in " ".join(result.stderr.split()) and "camera --fov 60" in result.stderr
    for stem, (width, height) in {"wide": (330, 250), "sub/small": (90, 60)}.items():
        assert np.load(out / f"{stem}_depth.npy").shape == (height, width)
        assert Image.open(out / f"{stem}_confidence.png").size == (width, height)
        assert Image.open(out / f"{stem}_side.png").size == (2 * width, height)
        header, start = read_ply_header(out / f"{stem}.ply")
        assert header[:2] == ["ply", "format binary_little_endian 1.0"]
        count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
        assert 0 < count <= 5000
        properties = [line.split()[-1] for line in header if line.startswith("property")]
        assert properties == ["x", "y", "z", "nx", "ny", "nz", "red", "green", "blue"]
        assert (out / f"{stem}.ply").stat().st_size == start + count * (6 * 4 + 3)
