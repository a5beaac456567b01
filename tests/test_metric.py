"""Metric models: declared in metres (sigmoid × max_depth), run end to end as Depth Anything V2's metric
`infer_image`, and written in metres."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import anydepth_cli
from anydepth_cli.errors import UsageError
from anydepth_cli.io.writers import read_png16
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.registry import MODELS
from anydepth_cli.weights.choice import choose_weights
from conftest import run_cli
from metric_fixture import ARCH, MAX_DEPTH, META, build_checkpoint, cases

METRIC = {f"dav2-metric-{dataset}-{size}": (repo, depth)
          for dataset, repo, depth in (("hypersim", "Hypersim", 20.0), ("vkitti", "VKITTI", 80.0))
          for size in ("vits", "vitb", "vitl")}
HUB_SIZES = {"vits": "Small", "vitb": "Base", "vitl": "Large"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("metric"))


def test_the_six_metric_models_are_registered_with_their_range_and_files():
    for name, (repo, max_depth) in METRIC.items():
        spec, size = MODELS[name], name.rsplit("-", 1)[1]
        dataset = name.split("-")[2]
        assert spec.repo_id == f"depth-anything/Depth-Anything-V2-Metric-{repo}-{HUB_SIZES[size]}"
        assert spec.filename == f"depth_anything_v2_metric_{dataset}_{size}.pth"
        assert (spec.output, spec.config.activation, spec.config.max_depth) == ("metric", "sigmoid", max_depth)
        relative = MODELS[f"dav2-dpt-{size}"].config
        assert spec.config.to_dict() == {**relative.to_dict(), "output": "metric", "activation": "sigmoid",
                                         "max_depth": max_depth}


@pytest.mark.parametrize("changes,problem", [
    ({"output": "metric"}, "max_depth"), ({"output": "metric", "max_depth": -1}, "max_depth"),
    ({"output": "metric", "max_depth": 20, "activation": "relu"}, "activation sigmoid"),
    ({"activation": "sigmoid"}, "for output metric"), ({"max_depth": 20}, "for output metric"),
])
def test_a_half_metric_declaration_is_a_usage_error(changes, problem):
    base = {**META["config"], "output": None, "activation": None, "max_depth": None}
    with pytest.raises(UsageError, match=problem):
        NetworkConfig.from_dict({**base, **changes})


def test_model_with_a_local_checkpoint_takes_the_registry_architecture():
    choice = choose_weights("dav2-metric-vkitti-vitl", "local.pth", None)
    assert choice.config == MODELS["dav2-metric-vkitti-vitl"].config and choice.path.name == "local.pth"


def test_photos_of_awkward_sizes_match_their_metric_infer_image(checkpoint):
    model = anydepth_cli.load(checkpoint, arch=ARCH, device="cpu", precision="fp32", input_size=META["input_size"])
    assert model.kind == "metric"
    photos, references = zip(*cases())
    for result, reference in zip(model.predict_batch(list(photos)), references):
        assert result.map.shape == reference.shape
        assert reference.std() > 0.02 * MAX_DEPTH  # the maps vary, so a resize error would show
        assert np.abs(result.map - reference).max() <= 1e-4 * MAX_DEPTH


def test_predict_writes_metres_npy_and_millimetre_png16(checkpoint, tmp_path):
    photo, reference = cases()[0]
    Image.fromarray(photo).save(tmp_path / "crop.png")
    for raw in ("npy", "png16"):
        done = run_cli("predict", tmp_path / "crop.png", "-o", tmp_path / raw, "--checkpoint", checkpoint,
                       "--arch", ARCH, "--input-size", str(META["input_size"]), "--raw", raw, "--device", "cpu",
                       "--precision", "fp32")
        assert done.returncode == 0, done.stderr
        assert "metric depth (metres" in done.stderr
    assert np.abs(np.load(tmp_path / "npy" / "crop_metric.npy") - reference).max() <= 1e-4 * MAX_DEPTH
    png = tmp_path / "png16" / "crop_metric16.png"
    millimetres = np.asarray(Image.open(png)).astype(np.float64)
    assert np.abs(millimetres / 1000 - reference).max() <= 0.0005 + 1e-4 * MAX_DEPTH
    assert np.abs(read_png16(png) - reference).max() <= 0.0005 + 1e-4 * MAX_DEPTH


def test_models_info_shows_the_range():
    done = run_cli("models", "info", "dav2-metric-vkitti-vitb")
    assert done.returncode == 0, done.stderr
    assert "range 0–80 m" in done.stdout and "Metric-VKITTI-Base" in done.stdout
    assert json.loads(done.stdout.split("architecture", 1)[1].strip())["max_depth"] == 80.0


def test_colorbar_labels_metres_beside_the_picture(checkpoint, tmp_path):
    photo, reference = cases()[1]
    Image.fromarray(photo).save(tmp_path / "crop.png")
    for bar in ((), ("--colorbar",)):
        done = run_cli("predict", tmp_path / "crop.png", "-o", tmp_path / f"out{len(bar)}", "--checkpoint",
                       checkpoint, "--arch", ARCH, "--input-size", str(META["input_size"]), "--device", "cpu", *bar)
        assert done.returncode == 0, done.stderr
    plain = np.asarray(Image.open(tmp_path / "out0" / "crop_depth.png"))
    barred = np.asarray(Image.open(tmp_path / "out1" / "crop_depth.png"))
    height, width = reference.shape
    assert plain.shape == (height, width, 3) and barred.shape[0] == height and barred.shape[1] > width + 40
    assert np.array_equal(barred[:, :width], plain)
    bar = barred[:, width + 6:width + 22].astype(int)
    assert np.all(bar[0] == bar[0, 0]) and abs(bar[0, 0] - bar[-1, 0]).sum() > 100  # a ramp, far (dark) on top
    assert bar[0].sum() < bar[-1].sum()
    labels = barred[:, width + 22:]
    assert (labels < 128).any()  # printed ticks


def test_a_scene_beyond_the_range_is_named_once(checkpoint, tmp_path):
    import torch

    state = torch.load(checkpoint, weights_only=True)
    state["depth_head.scratch.output_conv2.2.bias"] += 6.0  # most of the map at the sigmoid's top
    torch.save(state, tmp_path / "far.pth")
    photo, _ = cases()[0]
    Image.fromarray(photo).save(tmp_path / "street.png")
    Image.fromarray(photo).save(tmp_path / "room.png")
    runs = {}
    for name, weights in (("far", tmp_path / "far.pth"), ("near", checkpoint)):
        runs[name] = run_cli("predict", tmp_path / "street.png", tmp_path / "room.png", "-o", tmp_path / name,
                             "--checkpoint", weights, "--arch", ARCH, "--input-size", str(META["input_size"]),
                             "--device", "cpu")
        assert runs[name].returncode == 0, runs[name].stderr
    text = " ".join(runs["far"].stderr.split())
    assert "street.png: warning:" in text and "room.png: warning:" in text and "20 m limit" in text
    assert "warning" not in runs["near"].stderr
    assert json.loads((tmp_path / "far" / "street_camera.json").read_text())["max_depth"] == MAX_DEPTH


def test_eval_align_none_scores_metres_as_they_are_beside_the_aligned_scores(checkpoint, tmp_path):
    import csv

    import cv2

    from anydepth_cli.evaluation.metrics import depth_metrics

    model = anydepth_cli.load(checkpoint, arch=ARCH, device="cpu", input_size=META["input_size"])
    (tmp_path / "data" / "image").mkdir(parents=True)
    (tmp_path / "data" / "depth").mkdir()
    expected = {}
    for i, (photo, _) in enumerate(cases()[:2]):
        Image.fromarray(photo).save(tmp_path / "data" / "image" / f"f{i}.png")
        truth = np.linspace(4.0, 12.0, photo.shape[0] * photo.shape[1]).reshape(photo.shape[:2])
        assert cv2.imwrite(str(tmp_path / "data" / "depth" / f"f{i}.png"), np.round(truth * 1000).astype(np.uint16))
        truth = np.round(truth * 1000) / 1000
        pred = np.clip(model.predict(tmp_path / "data" / "image" / f"f{i}.png").map, truth.min(), truth.max())
        expected[f"f{i}.png"] = depth_metrics(pred, truth, np.ones(truth.shape, bool))["abs_rel"]
    done = run_cli("eval", tmp_path / "data", "-o", tmp_path / "report", "--checkpoint", checkpoint, "--arch", ARCH,
                   "--input-size", str(META["input_size"]), "--device", "cpu", "--align", "none")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "report" / "eval_per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    unaligned = {row["image"].rsplit("/", 1)[1]: row for row in rows if row["aligned_as"] == "none"}
    aligned = [row for row in rows if row["aligned_as"] == "depth"]
    assert len(aligned) == 2 and set(unaligned) == set(expected)
    for name, row in unaligned.items():
        assert row["model"] == "tiny_dav2_metric.pth (metres, unaligned)" and float(row["scale"]) == 1.0
        assert float(row["abs_rel"]) == pytest.approx(expected[name], rel=1e-4)
    assert all(float(row["abs_rel"]) < float(unaligned[row["image"].rsplit("/", 1)[1]]["abs_rel"]) for row in aligned)
    assert "(metres, unaligned)" in (tmp_path / "report" / "eval_summary.md").read_text()


def test_eval_align_none_needs_a_metric_model(tmp_path):
    from conftest import tiny_model_args

    photo, _ = cases()[0]
    (tmp_path / "data" / "image").mkdir(parents=True)
    (tmp_path / "data" / "depth").mkdir()
    Image.fromarray(photo).save(tmp_path / "data" / "image" / "f.png")
    Image.fromarray(np.full(photo.shape[:2], 3000, np.uint16)).save(tmp_path / "data" / "depth" / "f.png")
    done = run_cli("eval", tmp_path / "data", "-o", tmp_path / "report", *tiny_model_args(), "--align", "none",
                   "--device", "cpu")
    assert done.returncode == 2 and "no model here gives metres" in done.stderr


def test_benchmarks_report_a_metric_model_unaligned_beside_aligned(checkpoint, tmp_path):
    import csv

    from benchmark_sets import make_root

    root = make_root(tmp_path / "sets", as_tar=False)
    done = run_cli("eval", "--benchmark", "nyu,kitti", "--data-root", root, "-o", tmp_path / "report", "--checkpoint",
                   checkpoint, "--arch", ARCH, "--input-size", str(META["input_size"]), "--device", "cpu",
                   "--align", "none")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "report" / "eval_per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    unaligned = [row for row in rows if row["model"] == "tiny_dav2_metric.pth (metres, unaligned)"]
    aligned = [row for row in rows if row["model"] == "tiny_dav2_metric.pth"]
    assert len(unaligned) == len(aligned) == 4
    assert all((float(row["scale"]), float(row["shift"])) == (1.0, 0.0) for row in unaligned)
    assert all(float(row["scale"]) != 1.0 for row in aligned)
    assert "tiny_dav2_metric.pth (metres, unaligned)" in (tmp_path / "report" / "eval_benchmarks.md").read_text()


def test_a_clip_from_a_metric_model_records_its_camera_in_metres(checkpoint, tmp_path):
    from test_video import make_clip

    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=4, size=(96, 64), fps=8.0)
    done = run_cli("predict", clip, "-o", tmp_path / "out", "--checkpoint", checkpoint, "--arch", ARCH,
                   "--input-size", str(META["input_size"]), "--raw", "npz", "--focal", "80", "--no-stabilize")
    assert done.returncode == 0, done.stderr
    archive = np.load(tmp_path / "out" / "clip_metric.npz")
    assert archive["metric"].shape == (4, 64, 96) and 0 < archive["metric"].max() < MAX_DEPTH
    record = json.loads((tmp_path / "out" / "clip_camera.json").read_text())
    assert json.loads(str(archive["camera"])) == record
    assert record["metric"] is True and record["units"] == "metres" and record["max_depth"] == MAX_DEPTH
    assert record["fx"] == 80.0 and record["focal_source"] == "--focal 80"


@pytest.mark.slow
def test_an_onnx_export_of_a_metric_model_answers_in_metres(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    photo, reference = cases()[0]
    Image.fromarray(photo).save(tmp_path / "crop.png")
    model = ["--checkpoint", checkpoint, "--arch", ARCH, "--input-size", str(META["input_size"])]
    exported = run_cli("export", *model, "-o", tmp_path / "metric.onnx")
    assert exported.returncode == 0, exported.stderr
    done = run_cli("predict", tmp_path / "crop.png", "-o", tmp_path / "out", "--onnx", tmp_path / "metric.onnx",
                   "--raw", "npy")
    assert done.returncode == 0, done.stderr
    assert "via ONNX Runtime" in done.stderr and "metric depth (metres" in done.stderr
    assert np.abs(np.load(tmp_path / "out" / "crop_metric.npy") - reference).max() <= 1e-4 * MAX_DEPTH
    record = json.loads((tmp_path / "out" / "crop_camera.json").read_text())
    assert record["units"] == "metres" and record["max_depth"] == MAX_DEPTH
