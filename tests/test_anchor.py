"""Metric clouds and `--metric-from`: a metric model's cloud is in metres as it stands; a relative model's map is
anchored to a metric model's by a fit in its own space over the pixels both trust."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

from anydepth_cli.pipelines.anchor import fit_anchor
from anydepth_cli.geometry.camera import Intrinsics
from anydepth_cli.geometry.pointcloud import build_point_cloud
from conftest import run_cli, tiny_model_args
from metric_fixture import ARCH, build_checkpoint, cases


def scene(height: int = 90, width: int = 120) -> np.ndarray:
    """Metric depth of a floor receding from 1.5 m to 12 m with a box at 3 m in front of it."""
    depth = np.repeat(np.linspace(12.0, 1.5, height, dtype=np.float32)[:, None], width, axis=1)
    depth[30:60, 40:80] = 3.0
    return depth


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_the_fit_recovers_metres_in_the_relative_models_own_space(kind):
    rng = np.random.default_rng(1)
    metric = scene()
    truth_relative = 0.2 * metric + 0.5 if kind == "depth" else 3.0 / metric + 0.7
    relative = truth_relative * (1 + 0.01 * rng.standard_normal(metric.shape)).astype(np.float32)
    observed = metric * (1 + 0.02 * rng.standard_normal(metric.shape)).astype(np.float32)
    observed[:10, :10] = 40.0  # a patch the metric model gets wrong: an outlier, left out
    fit = fit_anchor(relative, kind, observed, max_depth=80.0)
    anchored = fit.apply(relative)
    assert np.median(np.abs(anchored - metric) / metric) < 0.02
    assert 0.01 < fit.residual < 0.05
    assert 0.5 < fit.used < 0.99  # the edges of the box and the bad patch are not used
    assert fit.record()["space"] == kind


def test_pixels_at_the_range_end_are_not_trusted():
    metric = scene()
    relative = 1.0 / metric
    capped = np.minimum(metric, 8.0)  # a 8 m model: far floor saturated
    fit = fit_anchor(relative, "disparity", capped, max_depth=8.0 / 0.995)
    assert np.allclose(fit.apply(relative), metric, rtol=1e-3)


def test_a_metric_cloud_is_in_metres_with_the_camera_at_the_origin():
    depth = scene()
    rgb = np.zeros((*depth.shape, 3), np.uint8)
    camera = Intrinsics(fx=100.0, fy=100.0, cx=59.5, cy=44.5, source="test")
    cloud = build_point_cloud(rgb, depth, camera, kind="metric", edge_threshold=None, max_points=None,
                              sky_fraction=None, frame="opencv")
    assert np.allclose(np.sort(cloud.points[:, 2]), np.sort(depth.ravel()))
    assert "metres" in cloud.description


@pytest.fixture(scope="module")
def metric_checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("metric"))


def test_metric_from_gives_a_relative_model_metres(tmp_path, metric_checkpoint):
    photo, reference = cases()[0]
    Image.fromarray(photo).save(tmp_path / "crop.png")
    done = run_cli("predict", tmp_path / "crop.png", "-o", tmp_path / "out", *tiny_model_args("tiny_dinov3_sdt"),
                   "--metric-from", metric_checkpoint, "--metric-arch", ARCH, "--raw", "npy", "--pointcloud",
                   "--metric", "--device", "cpu", "--input-size", "64")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stderr.split())
    assert "anchored to tiny_dav2_metric.pth" in text and "crop.png: anchored: depth ×" in text
    anchored = np.load(tmp_path / "out" / "crop_metric.npy")
    record = json.loads((tmp_path / "out" / "crop_camera.json").read_text())
    assert record["metric"] is True and record["units"] == "metres"
    assert record["anchor"]["space"] == "depth" and 0 < record["anchor"]["share_used"] <= 1
    # in metres: the anchored map sits in the metric model's range, at its scale
    assert abs(np.nanmedian(anchored) / np.median(reference) - 1) < 0.2
    points = PlyData.read(tmp_path / "out" / "crop.ply")["vertex"]
    assert len(points.data) > 0 and np.nanmedian(-points["z"]) == pytest.approx(np.nanmedian(anchored), rel=0.2)


def test_a_metric_claim_from_a_relative_model_is_refused_with_one_line(tmp_path):
    Image.fromarray(cases()[0][0]).save(tmp_path / "crop.png")
    done = run_cli("predict", tmp_path / "crop.png", "-o", tmp_path / "out", *tiny_model_args("tiny_dinov3_sdt"),
                   "--metric", "--device", "cpu")
    assert done.returncode == 2
    assert "--metric-from" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_metric_models_cloud_takes_no_scene_scale(tmp_path, metric_checkpoint):
    Image.fromarray(cases()[0][0]).save(tmp_path / "crop.png")
    done = run_cli("predict", tmp_path / "crop.png", "-o", tmp_path / "out", "--checkpoint", metric_checkpoint,
                   "--arch", ARCH, "--pointcloud", "--near", "2", "--device", "cpu")
    assert done.returncode == 2 and "needs no --near" in done.stderr
