"""The camera contract: focal length from --focal/--fov, else EXIF on the diagonal (orientation applied), else the
stated default; every geometry output records it; projection inverts unprojection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import ExifTags, Image
from plyfile import PlyData

from anydepth_cli.geometry.camera import Intrinsics, intrinsics_for, project, unproject_pixels
from conftest import run_cli
from metric_fixture import ARCH, META, build_checkpoint


@pytest.fixture(scope="module")
def metric_args(tmp_path_factory):
    checkpoint = build_checkpoint(tmp_path_factory.mktemp("metric"))
    return ["--checkpoint", str(checkpoint), "--arch", str(ARCH), "--input-size", str(META["input_size"]),
            "--device", "cpu"]


def exif_photo(path, width, height, focal_35mm=None, orientation=None):
    """A smooth photo stored `width` × `height` with the given EXIF focal length and orientation tags."""
    exif = Image.Exif()
    if focal_35mm is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = focal_35mm
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    Image.fromarray(ramp).save(path, exif=exif, quality=95)
    return path


def test_unproject_then_reproject_is_within_a_hundredth_of_a_pixel():
    rng = np.random.default_rng(0)
    camera = Intrinsics(fx=3100.0, fy=3050.0, cx=2011.3, cy=1507.9, source="test")
    rows = rng.integers(0, 3024, 100_000)
    cols = rng.integers(0, 4032, 100_000)
    depth = rng.uniform(0.05, 80.0, 100_000).astype(np.float32)
    pixels = project(unproject_pixels(rows, cols, depth, camera), camera)
    error = np.hypot(pixels[:, 0] - cols, pixels[:, 1] - rows)
    assert error.max() < 0.01
    assert error.max() > 0  # float32 points: the check measures something


def test_exif_focal_is_converted_on_the_diagonal_of_the_upright_photo(tmp_path, metric_args):
    # stored 96 wide and 48 high, orientation 6 (rotate 90° clockwise to view): upright it is 48 × 96
    exif_photo(tmp_path / "portrait.jpg", 96, 48, focal_35mm=26, orientation=6)
    done = run_cli("predict", tmp_path / "portrait.jpg", "-o", tmp_path / "out", *metric_args)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "out" / "portrait_camera.json").read_text())
    assert (record["width"], record["height"], record["cx"], record["cy"]) == (48, 96, 23.5, 47.5)
    assert record["fx"] == record["fy"] == pytest.approx(26 * math.hypot(48, 96) / math.hypot(36, 24))
    assert record["focal_source"].startswith("EXIF 26 mm") and record["metric"] is True
    assert record["units"] == "metres" and record["model"] == "tiny_dav2_metric.pth"


@pytest.mark.parametrize("focal", [0, 6000])
def test_an_absurd_exif_focal_is_ignored_with_one_note(tmp_path, metric_args, focal):
    exif_photo(tmp_path / "odd.jpg", 64, 48, focal_35mm=focal)
    done = run_cli("predict", tmp_path / "odd.jpg", "-o", tmp_path / "out", *metric_args)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"EXIF focal length {focal} mm") == 1, done.stderr
    record = json.loads((tmp_path / "out" / "odd_camera.json").read_text())
    assert record["focal_source"] == "default 60° horizontal FOV"
    assert record["fx"] == pytest.approx(intrinsics_for(64, 48).fx)


@pytest.mark.parametrize("option", [("--focal", "0"), ("--focal", "-3"), ("--fov", "180"), ("--fov", "0")])
def test_bad_focal_or_fov_is_a_usage_error(tmp_path, option):
    exif_photo(tmp_path / "p.jpg", 32, 32)
    done = run_cli("predict", tmp_path / "p.jpg", "-o", tmp_path / "out", "--pointcloud", *option,
                   "--checkpoint", "missing.pth", "--arch", "missing.json")
    assert done.returncode == 2
    assert option[0] in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_cloud_records_its_camera_in_ply_comments_and_sidecar(tmp_path, metric_args):
    exif_photo(tmp_path / "room.jpg", 80, 60)
    done = run_cli("predict", tmp_path / "room.jpg", "-o", tmp_path / "out", "--pointcloud", "--focal", "70",
                   *metric_args)
    assert done.returncode == 0, done.stderr
    comments = PlyData.read(tmp_path / "out" / "room.ply").comments
    record = json.loads((tmp_path / "out" / "room_camera.json").read_text())
    assert record["fx"] == 70 and record["focal_source"] == "--focal 70"
    for key in ("fx", "fy", "cx", "cy", "units", "model", "metric", "focal_source"):
        assert any(line.startswith(f"{key} ") for line in comments), key
    assert 'units "metres"' in comments and "fx 70.0" in comments and "metric true" in comments
    assert json.loads(next(line for line in comments if line.startswith("focal_source "))[13:]) == "--focal 70"
