"""`anydepth export --precision fp16|int8`: fp16 parity with PyTorch relative to the output's range, int8 calibrated
on a folder of photos and correlated with fp32, the model card recording both, `predict --onnx` running them, and
the usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")

from anydepth_cli.bench.weights import output_difference  # noqa: E402
from anydepth_cli.export import onnx as onnx_export  # noqa: E402
from anydepth_cli.inference.model_card import ModelCard  # noqa: E402
from anydepth_cli.inference.onnx_backend import OnnxPredictor  # noqa: E402
from anydepth_cli.inference.preprocess import prepare_batch, resizing_of  # noqa: E402
from anydepth_cli.io.images import read_image  # noqa: E402
from anydepth_cli.models.config import NetworkConfig  # noqa: E402
from anydepth_cli.models.fuse import prepare_for_inference  # noqa: E402
from anydepth_cli.weights.checkpoint import load_network  # noqa: E402
from conftest import run_cli, save_photo, tiny_model_args  # noqa: E402
from fixtures_dir import fixtures_dir  # noqa: E402

VARYING = ("tiny_dinov3_sdt",)
"""A fixture whose outputs vary on photos (tiny_dav2_sdt and tiny_dinov3_dpt sit mostly on the final ReLU's floor),
with rotary positions and DySample; `benchmarks/precision.py` measures every fixture."""
FP16_OVER_RANGE = 1e-2
"""fp16's largest difference from fp32, relative to the output's range: 2.5e-3 to 3e-3 measured on these fixtures,
a few roundings of an 11-bit significand through the network; a lowering that put a normalisation or the sampling
positions in fp16 would exceed it."""
INPUT_SIZE = 70


def network_of(name: str):
    path = fixtures_dir() / f"{name}.json"
    return prepare_for_inference(load_network(NetworkConfig.from_file(path), path.with_suffix(".pth")))


def photo_input(network, sample_photo: Path) -> torch.Tensor:
    return prepare_batch([read_image(sample_photo, None)], resizing_of(network.config, INPUT_SIZE))


@pytest.mark.parametrize("name", VARYING)
def test_fp16_export_matches_fp32_relative_to_range_and_keeps_normalisations_in_fp32(name, tmp_path, sample_photo):
    network = network_of(name)
    card = ModelCard.of(name, network.config, INPUT_SIZE, "fp16")
    summary = onnx_export.export_network(network, tmp_path / "m.onnx", card)
    predictor = OnnxPredictor(summary.path, device="cpu")
    assert predictor.card.precision == "fp16" and predictor.card.calibration_images == 0
    image = photo_input(network, sample_photo)
    with torch.inference_mode():
        expected = network(image)
    got = predictor.run(image)
    assert got.dtype == torch.float32 and expected.max() - expected.min() > 0.2 * expected.abs().max()
    assert output_difference(got, expected)["max_difference_over_range"] <= FP16_OVER_RANGE
    graph = onnx.load(str(summary.path)).graph
    types = {t.name: t.type.tensor_type.elem_type for t in onnx.shape_inference.infer_shapes(
        onnx.load(str(summary.path))).graph.value_info}
    assert sum(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer) >= 10
    norms = [node for node in graph.node if node.op_type in ("LayerNormalization", "GridSample")]
    assert norms and all(types.get(node.input[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for node in norms)


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory, sample_photo) -> Path:
    """Twelve photos to calibrate on: crops of the sample photo and smooth random images, with a text file."""
    folder = tmp_path_factory.mktemp("calibrate")
    from PIL import Image

    photo = Image.open(sample_photo)
    for i in range(6):
        photo.crop((i * 20, i * 30, 300 + i * 20, 400 + i * 30)).save(folder / f"crop{i}.jpg")
        save_photo(folder / "more" / f"random{i}.png", 80 + 8 * i, 60, seed=i)
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, calibration_folder):
    path = tmp_path_factory.mktemp("int8") / "tiny-int8.onnx"
    result = run_cli("export", *tiny_model_args("tiny_dinov3_sdt"), "-o", path, "--input-size", str(INPUT_SIZE),
                     "--precision", "int8", "--calibrate", calibration_folder)
    return result, path


def test_int8_export_records_its_calibration_and_predict_runs_it_close_to_fp32(int8_export, tmp_path, sample_photo):
    result, path = int8_export
    assert result.returncode == 0, result.stderr
    assert "int8 calibrated on 12 photo(s)" in " ".join(result.stderr.split())
    card = OnnxPredictor(path, device="cpu").card
    assert (card.precision, card.calibration_images) == ("int8", 12)
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(path)).graph.node)
    outputs = {}
    for name, args in (("int8", ["--onnx", path]), ("fp32", [*tiny_model_args("tiny_dinov3_sdt"), "--backend", "torch",
                                                              "--precision", "fp32"])):
        run = run_cli("predict", sample_photo, "-o", tmp_path / name, *args, "--input-size", str(INPUT_SIZE),
                      "--raw", "npy", "--device", "cpu", "--tile", "off")
        assert run.returncode == 0, run.stderr
        outputs[name] = np.load(tmp_path / name / f"{sample_photo.stem}_depth.npy")
    assert np.ptp(outputs["fp32"]) > 0.2 * np.abs(outputs["fp32"]).max()  # a map that varies, not a constant
    assert np.corrcoef(outputs["int8"].ravel(), outputs["fp32"].ravel())[0, 1] >= 0.98


def test_export_precision_usage_errors(tmp_path):
    unreadable = tmp_path / "broken"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"not a png")
    (unreadable / "b.txt").write_text("text")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--precision", "int8"], "--calibrate"),
        (["--precision", "int8", "--calibrate", unreadable], "no readable photo"),
        (["--precision", "int8", "--calibrate", empty], "--calibrate"),
        (["--precision", "fp16", "--calibrate", unreadable], "--calibrate goes with --precision int8"),
        (["--precision", "bf16"], "--precision must be one of fp32, fp16, int8"),
    ]
    for args, message in cases:
        out = tmp_path / "x.onnx"
        result = run_cli("export", *tiny_model_args(), "-o", out, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
        assert not out.exists()


def test_older_exports_without_a_precision_read_as_fp32():
    card = ModelCard.of("m", NetworkConfig.from_file(fixtures_dir() / "tiny_dav2_sdt.json"), 56)
    props = {key: value for key, value in card.to_metadata().items()
             if not key.endswith(("precision", "calibration_images"))}
    assert ModelCard.from_metadata(props, "old.onnx") == card
    assert json.loads(card.to_metadata()["anydepth.calibration_images"]) == 0
