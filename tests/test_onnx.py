"""ONNX export and the ONNX Runtime backend: parity with every shared fixture at several input sizes, the model card
in the metadata, usage errors, and the real CLI (export, then predict on photos, tiles, point clouds and a video with
both backends)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")

from anydepth_cli import __version__  # noqa: E402
from anydepth_cli.errors import UsageError  # noqa: E402
from anydepth_cli.export import onnx as onnx_export  # noqa: E402
from anydepth_cli.inference.model_card import ModelCard  # noqa: E402
from anydepth_cli.inference.onnx_backend import TIMING_KEY, CpuTiming, OnnxPredictor  # noqa: E402
from anydepth_cli.inference.preprocess import MEAN, STD  # noqa: E402
from anydepth_cli.models.config import NetworkConfig  # noqa: E402
from anydepth_cli.models.fuse import prepare_for_inference  # noqa: E402
from anydepth_cli.pipelines.runtime import open_predictor  # noqa: E402
from anydepth_cli.weights.checkpoint import load_network  # noqa: E402
from conftest import TINY, cli_env, run_cli, save_photo, tiny_model_args  # noqa: E402
from fixtures_dir import fixtures_dir  # noqa: E402
from reference_pipelines import assert_agrees, awkward_photos, published_inference  # noqa: E402
from test_video import make_clip  # noqa: E402

TOLERANCE = 1e-3
FIXTURES = sorted(fixtures_dir().glob("*.json"))
EXTERNAL = "tiny_dinov3_dpt"
"""Exported with its weights in NAME.onnx.data, the layout of models over 2 GB."""
OTHER_GRID = (23, 30)
"""A patch grid no fixture case has (one side odd, one even), run at batch 2 against PyTorch."""
CLI_INPUT_SIZE = 70


def fixture_network(path):
    meta = json.loads(path.read_text())
    return prepare_for_inference(load_network(NetworkConfig.from_file(path), path.parent / meta["checkpoint"]))


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """`anydepth export` of the TINY fixture as a user runs it: the finished process and the file it wrote."""
    path = tmp_path_factory.mktemp("cli-export") / "tiny.onnx"
    result = run_cli("export", *tiny_model_args(), "--format", "onnx", "-o", path,
                     "--input-size", str(CLI_INPUT_SIZE))
    return result, path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cli_export):
    """Fixture path → (its network, its ONNX file), each exported once: TINY by the CLI, the others here."""
    folder = tmp_path_factory.mktemp("onnx")
    models = {}

    def get(path):
        if path.stem not in models:
            network = fixture_network(path)
            if path.stem == TINY:
                assert cli_export[0].returncode == 0, cli_export[0].stderr
                models[path.stem] = network, cli_export[1]
            else:
                target = folder / f"{path.stem}.onnx"
                card = ModelCard.of(path.stem, network.config, 37 * network.config.patch_size)
                with pytest.MonkeyPatch.context() as patch:
                    if path.stem == EXTERNAL:
                        patch.setattr(onnx_export, "SINGLE_FILE_LIMIT", 0)
                    onnx_export.export_network(network, target, card)
                models[path.stem] = network, target
        return models[path.stem]

    return get


def test_fixtures_are_present():
    assert FIXTURES and any(p.stem == TINY for p in FIXTURES), f"no fixtures found in {fixtures_dir()}"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_onnx_runtime_matches_every_fixture_case_and_torch_at_another_size(path, exported):
    network, model = exported(path)
    onnx.checker.check_model(str(model), full_check=True)
    predictor = OnnxPredictor(model, device="cpu")
    meta = json.loads(path.read_text())
    arrays = np.load(path.parent / meta["arrays"])
    floor = network.config.output_floor
    sizes = set()
    for case in meta["cases"]:
        image = arrays[f"input_{case['index']}"]
        expected = np.maximum(arrays[f"output_{case['index']}"], 0) + floor
        output = predictor.run(torch.from_numpy(image)).numpy()
        assert output.shape == expected.shape
        assert np.abs(output - expected).max() <= TOLERANCE, f"case {case['index']} at {image.shape[-2:]}"
        sizes.add(image.shape[-2:])
    patch = network.config.patch_size
    other = torch.randn(2, 3, OTHER_GRID[0] * patch, OTHER_GRID[1] * patch, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = network(other).numpy()
    output = predictor.run(other).numpy()
    assert output.shape == expected.shape
    assert np.abs(output - expected).max() <= TOLERANCE
    assert len(sizes | {tuple(other.shape[-2:])}) >= 2


@pytest.mark.parametrize("name", ["tiny_da3_sdt", "tiny_dinov3_sdt"])
def test_onnx_runtime_resizes_as_the_models_family_publishes(name, exported, sample_photo):
    """The resizing declared in the exported architecture (Depth Anything 3's; Depth Anything V2's for the DINOv3
    network) is the one ONNX Runtime runs by, on a thin portrait and an odd landscape photo."""
    network, model = exported(fixtures_dir() / f"{name}.json")
    predictor = OnnxPredictor(model, input_size=100, device="cpu")
    config = network.config
    assert config.resize == ("da3" if name == "tiny_da3_sdt" else "dav2")
    images = awkward_photos(sample_photo)[:2]
    for image, values in zip(images, predictor.predict_batch(images)):
        reference = published_inference(config.resize, network, image, 100, config.patch_size)
        assert_agrees(values, reference, config.output_floor)


def test_the_model_card_and_dynamic_axes_are_in_the_file(exported):
    path = fixtures_dir() / f"{TINY}.json"
    network, model = exported(path)
    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["anydepth.model"] == f"{TINY}.pth"
    assert (props["anydepth.output"], props["anydepth.activation"]) == ("depth", "relu+0.001")
    assert (json.loads(props["anydepth.patch_size"]), json.loads(props["anydepth.input_size"])) == (14, CLI_INPUT_SIZE)
    assert json.loads(props["anydepth.mean"]) == pytest.approx(MEAN.tolist())
    assert json.loads(props["anydepth.std"]) == pytest.approx(STD.tolist())
    assert json.loads(props["anydepth.architecture"]) == network.config.to_dict()
    assert props["anydepth.version"] == __version__
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (image,), (output,) = proto.graph.input, proto.graph.output
    assert image.name == "image" and output.name == "depth"
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    assert output.type.tensor_type.shape.dim[1].dim_value == 1
    card = OnnxPredictor(model, device="cpu").card
    assert card == ModelCard.of(f"{TINY}.pth", network.config, CLI_INPUT_SIZE)


def test_large_models_keep_their_weights_beside_the_file(exported):
    _, model = exported(fixtures_dir() / f"{EXTERNAL}.json")
    data = model.with_name(model.name + ".data")
    assert data.is_file() and data.stat().st_size > model.stat().st_size
    proto = onnx.load(str(model), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_the_export_command_reports_one_line(cli_export):
    result, path = cli_export
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "[torch.onnx]" not in result.stdout + result.stderr
    line, = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"wrote {path}") and "outputs depth" in line and "ONNX Runtime matches PyTorch" in line
    assert re.search(r"ONNX Runtime [\d.]+ s, PyTorch [\d.]+ s per \d+×\d+ call on \d+ thread\(s\) on this CPU", line)


def with_timing(source: Path, target: Path, **changes) -> Path:
    """A copy of the exported `source` whose recorded CPU timing has `changes` (e.g. onnxruntime=..., cpu=...)."""
    proto = onnx.load(str(source))
    entry = next(p for p in proto.metadata_props if p.key == TIMING_KEY)
    entry.value = json.dumps({**json.loads(entry.value), **changes})
    onnx.save_model(proto, str(target))
    return target


def test_auto_backend_runs_the_export_only_where_it_was_timed_faster_here(tmp_path, cli_export):
    model = cli_export[1]
    weights = dict(model=None, checkpoint=tiny_model_args()[1], arch=Path(tiny_model_args()[3]), device="cpu")
    timing = CpuTiming.from_metadata(onnx_metadata(model))
    assert timing is not None and timing.from_here() and timing.torch > 0 and timing.onnxruntime > 0

    def backend(path: Path, **options) -> str:
        predictor, label = open_predictor(**{**weights, **options}, onnx=path)
        return "onnxruntime" if isinstance(predictor, OnnxPredictor) else "torch"

    faster = with_timing(model, tmp_path / "faster.onnx", torch=2.0, onnxruntime=1.0)
    slower = with_timing(model, tmp_path / "slower.onnx", torch=1.0, onnxruntime=0.97)
    elsewhere = with_timing(model, tmp_path / "elsewhere.onnx", torch=2.0, onnxruntime=1.0, cpu="another CPU")
    assert backend(faster) == "onnxruntime" and backend(slower) == backend(elsewhere) == "torch"
    assert backend(faster, precision="bf16") == "torch"
    alone = open_predictor(None, None, None, device="cpu", onnx=slower)[0]
    assert isinstance(alone, OnnxPredictor)  # the only model given
    other = tiny_model_args("tiny_da3_sdt")
    with pytest.raises(UsageError, match="faster.onnx is an export of tiny_dav2_sdt.pth, not of tiny_da3_sdt.pth"):
        open_predictor(None, other[1], Path(other[3]), device="cpu", onnx=faster)
    with pytest.raises(UsageError, match="is an export of tiny_dav2_sdt.pth in another architecture"):
        open_predictor("anydepth-dav2-vitb", weights["checkpoint"], None, device="cpu", onnx=faster)


def onnx_metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_onnx_backend_usage_errors(tmp_path, cli_export):
    model = cli_export[1]
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    bare = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["depth"])], "bare",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info("depth", onnx.TensorProto.FLOAT, None)]))
    onnx.save_model(bare, str(tmp_path / "bare.onnx"))
    cases = [
        (dict(backend="onnxruntime"), "needs --onnx"),
        (dict(backend="torch", onnx=model), "--onnx runs with --backend onnxruntime or auto"),
        (dict(backend="onnxruntime", onnx=model, model="anydepth-dav2-vitb"), "drop --model"),
        (dict(backend="onnxruntime", onnx=model, precision="bf16"), "float32"),
        (dict(backend="onnxruntime", onnx=model, device="mps"), "auto, cpu or cuda"),
        (dict(backend="onnxruntime", onnx=tmp_path / "missing.onnx"), "not found"),
        (dict(backend="onnxruntime", onnx=tmp_path / "junk.onnx"), "cannot open junk.onnx"),
        (dict(backend="onnxruntime", onnx=tmp_path / "bare.onnx"), "no anydepth model card"),
        (dict(backend="onnxruntime", onnx=model, input_size=7), "--input-size must be at least 14"),
        (dict(backend="tensorflow"), "--backend must be one of"),
    ]
    for options, message in cases:
        arguments = {"model": None, "checkpoint": None, "arch": None, **options}
        with pytest.raises(UsageError, match=message):
            open_predictor(arguments.pop("model"), arguments.pop("checkpoint"), arguments.pop("arch"), **arguments)


@pytest.mark.parametrize("command,module", [("export", "onnxscript"), ("predict", "onnxruntime")])
def test_a_missing_extra_is_one_line_with_the_install_command(tmp_path, command, module):
    photo = save_photo(tmp_path / "p.jpg", 32, 32)
    args = (["export", *tiny_model_args(), "-o", str(tmp_path / "m.onnx")] if command == "export" else
            ["predict", str(photo), "-o", str(tmp_path / "out"), "--backend", "onnxruntime", "--onnx",
             str(tmp_path / "m.onnx")])
    code = (f"import sys; sys.modules[{module!r}] = None; sys.argv = ['anydepth', *{args!r}]\n"
            "from anydepth_cli.cli import main\nmain()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f'error: {module} is not installed: pip install "anydepth-cli[onnx]"'


def relative_files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_predict_with_onnxruntime_writes_what_torch_writes(tmp_path, cli_export):
    photos = tmp_path / "in"
    save_photo(photos / "wide.png", 330, 250, seed=3)
    save_photo(photos / "sub" / "small.jpg", 90, 60, seed=4)
    common = ["predict", photos, "--raw", "npy", "--tile", "--tile-size", "140", "--confidence", "--pointcloud",
              "--max-points", "3000"]
    torch_run = run_cli(*common, "-o", tmp_path / "torch", "--input-size", str(CLI_INPUT_SIZE), *tiny_model_args(),
                        "--precision", "fp32")
    ort_run = run_cli(*common, "-o", tmp_path / "ort", "--backend", "onnxruntime", "--onnx", cli_export[1])
    assert torch_run.returncode == 0, torch_run.stderr
    assert ort_run.returncode == 0, ort_run.stderr
    assert "via ONNX Runtime" in ort_run.stderr and "tiled" in ort_run.stderr
    assert relative_files(tmp_path / "ort") == relative_files(tmp_path / "torch")
    for stem in ("wide", "sub/small"):
        reference = np.load(tmp_path / "torch" / f"{stem}_depth.npy")
        assert np.abs(np.load(tmp_path / "ort" / f"{stem}_depth.npy") - reference).max() <= TOLERANCE


@pytest.mark.slow
def test_a_video_with_onnxruntime_matches_torch(tmp_path, cli_export):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=6, size=(96, 64), fps=12.0)
    torch_run = run_cli("predict", clip, "-o", tmp_path / "torch", "--raw", "npz", "--input-size",
                        str(CLI_INPUT_SIZE), *tiny_model_args(), "--precision", "fp32")
    ort_run = run_cli("predict", clip, "-o", tmp_path / "ort", "--raw", "npz", "--backend", "onnxruntime",
                      "--onnx", cli_export[1])
    assert torch_run.returncode == 0, torch_run.stderr
    assert ort_run.returncode == 0, ort_run.stderr
    assert relative_files(tmp_path / "ort") == relative_files(tmp_path / "torch") == ["clip_depth.mp4",
                                                                                      "clip_depth.npz"]
    reference = np.load(tmp_path / "torch" / "clip_depth.npz")["depth"].astype(np.float32)
    output = np.load(tmp_path / "ort" / "clip_depth.npz")["depth"].astype(np.float32)
    assert output.shape == reference.shape == (6, 64, 96)
    assert np.abs(output - reference).max() <= 1e-2 * max(1.0, float(np.abs(reference).max()))
