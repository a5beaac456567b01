"""VGGT as an encoder (issue #32): its registry entry, its weights taken from VGGT's whole-model checkpoint (a local
file or hf://), refusals of checkpoints that do not fit, the memory said and checked before loading, and a frozen
encoder that keeps nothing for backward. Parity with VGGT's own code is in test_parity.py, its pipeline in
test_family_pipelines.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anydepth_cli.errors import CheckpointError, UsageError
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork, build_network
from anydepth_cli.models.registry import ENCODER_MODELS, get_encoder
from anydepth_cli.models.vggt import VGGTEncoder
from anydepth_cli.training.distributed import World
from anydepth_cli.training.loop import train
from anydepth_cli.training.options import TrainOptions, source_config as _source_config
from anydepth_cli.training.report import Reporter
from anydepth_cli.training.start import begin_run as _begin
from anydepth_cli.weights.checkpoint import load_encoder_weights, load_network
from conftest import cli_env, run_cli, save_photo
from fixtures_dir import REPO
from hubserver import HubServer
from test_hardening import cli, run_limited
from vggt_fixture import vggt_config, vggt_state, write_vggt_arch

sys.path.insert(0, str(REPO / "tools"))
from make_toy_dataset import make_dataset  # noqa: E402

GB = 1 << 30


def whole_vggt_model(path: Path) -> Path:
    """A VGGT-style whole-model checkpoint: the fixture's aggregator beside VGGT's other heads (random tensors named
    as VGGT names them, shaped unlike ours)."""
    state = {k: v for k, v in vggt_state().items() if k.startswith("aggregator.")}
    state.update({"camera_head.trunk.0.norm1.weight": torch.randn(96), "depth_head.norm.weight": torch.randn(48),
                  "depth_head.projects.0.weight": torch.randn(8, 48, 1, 1), "point_head.norm.weight": torch.randn(48),
                  "track_head.feature_extractor.norm.weight": torch.randn(48)})
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vggt")
    return {"arch": write_vggt_arch(root), "model": whole_vggt_model(root / "model.pt"),
            "data": make_dataset(root / "train", 4, 0, size=(42, 56))}


def test_the_registry_encoder_is_vggt_1b():
    spec = get_encoder("vggt-1b")
    config = spec.config
    assert (config.encoder, config.embed, config.depth, config.heads, config.layers, config.patch_encoder) == (
        "vggt", 1024, 24, 16, (4, 11, 17, 23), "dinov2-vitl14-reg")
    assert (config.head, config.fusion, config.detail_enhancer, config.cls, config.layout) == ("sdt", 256, True,
                                                                                             False, "vggt")
    assert config.feature_width == 2048 and config.resize == "vggt" and config.default_input_size == 518
    assert spec.reference == "hf://facebook/VGGT-1B/model.pt" and "CC BY-NC 4.0" in spec.licence
    network = build_network(config, device="meta")
    assert 0.9e9 < sum(p.numel() for p in network.encoder.parameters()) < 0.92e9
    assert network.head.weighted_fusion.projections[0][0].in_features == 2048
    with pytest.raises(UsageError, match="unknown encoder 'vggt-2b'; choose one of: vggt-1b"):
        get_encoder("vggt-2b")
    assert list(ENCODER_MODELS) == ["vggt-1b"]


def test_train_encoder_names_the_registry_architecture_and_vggts_weights(tmp_path):
    options = TrainOptions(data=(), output=tmp_path / "run", encoder="vggt-1b", steps=1)
    options.check()
    assert _source_config(options) == get_encoder("vggt-1b").config
    for clash in ({"model": "anydepth-dav2-vitb"}, {"encoder_weights": "x.pt"}, {"checkpoint": "x.pth"}):
        with pytest.raises(UsageError):
            TrainOptions(data=(), output=tmp_path / "run", encoder="vggt-1b", steps=1, **clash).check()


def test_a_vggt_architecture_must_name_a_fitting_patch_encoder():
    base = dict(encoder="vggt", embed=768, depth=4, heads=12, layers=(0, 1, 2, 3), head="sdt", layout="vggt")
    assert NetworkConfig(**base, patch_encoder="dinov2-vitb14-reg").patch_encoder_size == (768, 12, 12)
    with pytest.raises(UsageError, match="dinov2-vitl14-reg is 1024 wide: embed must be 1024, not 768"):
        NetworkConfig(**base, patch_encoder="dinov2-vitl14-reg")
    with pytest.raises(UsageError, match="patch_encoder must be one of dinov2-vits14-reg"):
        NetworkConfig(**base)


def test_the_encoder_is_the_aggregator_part_of_vggts_whole_checkpoint(files):
    network = DepthNetwork(vggt_config())
    load_encoder_weights(network, files["model"])
    state = vggt_state()
    for key, value in network.encoder.state_dict().items():
        assert torch.equal(value, state["aggregator." + key]), key


def test_checkpoints_that_do_not_fit_are_refused_naming_a_key(files, tmp_path):
    network = DepthNetwork(vggt_config())
    dinov2 = tmp_path / "dinov2.pth"
    torch.save({"blocks.0.norm1.weight": torch.ones(24), "cls_token": torch.zeros(1, 1, 24)}, dinov2)
    with pytest.raises(CheckpointError, match=r"holds no aggregator\.\* keys.*first key: blocks\.0\.norm1\.weight"):
        load_encoder_weights(network, dinov2)
    wider = tmp_path / "wider.pt"
    state = {k: v for k, v in vggt_state().items() if k.startswith("aggregator.")}
    state["aggregator.camera_token"] = torch.zeros(1, 2, 1, 32)
    torch.save(state, wider)
    with pytest.raises(CheckpointError, match=r"wrong shape encoder\.camera_token \(1, 2, 1, 32\)≠\(1, 2, 1, 24\)"):
        load_encoder_weights(network, wider)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if "global_blocks.4." not in k}, partial)
    with pytest.raises(CheckpointError, match=r"missing encoder\.global_blocks\.4\.norm1\.weight"):
        load_encoder_weights(network, partial)
    whole = tmp_path / "whole.pth"
    torch.save({k: v for k, v in vggt_state().items() if "frame_blocks.0." not in k}, whole)
    with pytest.raises(CheckpointError, match=r"missing encoder\.frame_blocks\.0\.norm1\.weight"):
        load_network(vggt_config(), whole)


def test_train_takes_vggts_encoder_from_the_hub_and_trains_a_fresh_head(files, tmp_path):
    env = cli_env(HF_HOME=str(tmp_path / "home"))
    output = tmp_path / "run"
    with HubServer({"facebook/VGGT-1B": {"model.pt": files["model"]}}) as endpoint:
        done = run_cli("train", files["data"], "--arch", files["arch"], "--encoder-weights",
                       "hf://facebook/VGGT-1B/model.pt", "--input-size", 28, "--steps", 2, "--batch-size", 2,
                       "--workers", 0, "-o", output, env={**env, "HF_ENDPOINT": endpoint})
    assert done.returncode == 0, done.stderr
    saved = torch.load(output / "model.pth", weights_only=True)
    state = vggt_state()
    encoder = {k[len("0.encoder.backbone."):]: v for k, v in saved.items() if k.startswith("0.encoder.backbone.")}
    assert encoder.keys() == {k[len("aggregator."):] for k in state if k.startswith("aggregator.")}
    assert all(torch.equal(v, state["aggregator." + k]) for k, v in encoder.items())
    assert json.loads((output / "arch.json").read_text())["encoder"] == "vggt"

    refused = run_cli("train", files["data"], "--arch", files["arch"], "--encoder-weights", files["arch"],
                      "--steps", 1, "-o", tmp_path / "bad", env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr


def test_training_runs_the_frozen_encoder_without_gradients(files, tmp_path, monkeypatch):
    seen: list[tuple[bool, bool]] = []
    forward = VGGTEncoder.forward

    def recording(self, x):
        features, grid = forward(self, x)
        seen.append((torch.is_grad_enabled(), any(t.requires_grad for pair in features for t in pair)))
        return features, grid

    monkeypatch.setattr(VGGTEncoder, "forward", recording)
    options = TrainOptions(data=(files["data"],), output=tmp_path / "run", arch=files["arch"],
                           encoder_weights=str(files["model"]), steps=2, batch_size=2, input_size=28, workers=0)
    start = _begin(options, World())
    head_before = {k: v.clone() for k, v in start.network.head.state_dict().items()}
    train(options, Reporter())
    assert len(seen) == 2 and seen == [(False, False)] * 2
    after = torch.load(tmp_path / "run" / "model.pth", weights_only=True)
    changed = [k for k, v in head_before.items()
               if v.is_floating_point() and not torch.equal(after["0.decoder." + k], v)]
    assert changed, "the head did not train"


def vggt_1b_arch(folder: Path) -> Path:
    path = folder / "vggt-1b.json"
    path.write_text(json.dumps(get_encoder("vggt-1b").config.to_dict()))
    return path


@pytest.mark.parametrize("command", ["predict", "train"])
def test_a_machine_with_less_memory_than_the_weights_is_refused_before_loading(command, tmp_path):
    arch = vggt_1b_arch(tmp_path)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"never read")
    if command == "predict":
        args = cli("predict", save_photo(tmp_path / "p.png", 64, 48), "--arch", arch, "--checkpoint", weights,
                   "--device", "cpu", "-o", tmp_path / "out")
    else:
        args = cli("train", tmp_path, "--arch", arch, "--encoder-weights", weights, "--steps", 1, "--device", "cpu",
                   "-o", tmp_path / "run")
    result = run_limited(args, limit=3 * GB, timeout=120)
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "not enough memory for the network: its weights need about 3.7 GB (float32)" in line, result.stderr
    assert result.stderr.count("Traceback") == 0
    assert not any((tmp_path / "run").rglob("*")) and not any((tmp_path / "out").rglob("*"))


VGGT_DEPTH_HEAD_PARAMETERS = 32_654_562
"""Parameters of VGGT's own depth head, `DPTHead(dim_in=2048, output_dim=2)`, counted on VGGT's code."""


def test_bench_puts_sdt_and_vggts_own_depth_head_on_vggt_1b():
    from anydepth_cli.bench.catalogue import default_resolutions, head_parameters, resolve_models
    from anydepth_cli.bench.flops import count_flops

    sdt, dpt = resolve_models("vggt-1b", ["sdt", "vggt-dpt"])
    assert sdt.config == get_encoder("vggt-1b").config and sdt.label == "vggt-1b"
    assert dpt.label == "vggt-1b encoder + VGGT DPT-256" and dpt.config.head == "dpt-vggt"
    assert (dpt.config.features, dpt.config.out_channels, dpt.config.outputs) == (256, (256, 512, 1024, 1024), 2)
    assert head_parameters(dpt.config)[0] == VGGT_DEPTH_HEAD_PARAMETERS
    assert head_parameters(sdt.config)[0] < VGGT_DEPTH_HEAD_PARAMETERS / 5
    assert default_resolutions("vggt-1b") == (252, 518, 1022)
    flops = {m.head: count_flops(m.config, 252) for m in (sdt, dpt)}
    assert flops["sdt"].encoder == flops["vggt-dpt"].encoder > 0
    assert flops["vggt-dpt"].decoder_thop > flops["vggt-dpt"].decoder > 0  # thop counts transposed convs by output


def test_bench_command_on_a_small_vggt(files, tmp_path):
    import typer
    from typer.testing import CliRunner

    from anydepth_cli.bench.catalogue import head_parameters, resolve_models
    from anydepth_cli.cli.bench import bench

    app = typer.Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, ["--encoder", "vggt-1b", "--arch", str(files["arch"]), "--heads", "sdt,vggt-dpt",
                                      "-r", "28", "--device", "cpu", "--runs", "1", "--warmup", "0",
                                      "-o", str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(m["head"], m["resolution"]) for m in data["measurements"]] == [("sdt", 28), ("vggt-dpt", 28)]
    models = resolve_models("vggt-1b", ["sdt", "vggt-dpt"], vggt_config())
    assert [m["decoder_params"] for m in data["measurements"]] == [head_parameters(m.config)[0] for m in models]


def test_a_large_encoder_is_held_in_half_precision_on_gpus_only(monkeypatch):
    import anydepth_cli.inference.memory as memory

    network = DepthNetwork(vggt_config())
    memory.hold_large_encoder_in(network, torch.device("cuda"), torch.bfloat16)
    assert next(network.encoder.parameters()).dtype == torch.float32  # far below LARGE_WEIGHTS
    monkeypatch.setattr(memory, "LARGE_WEIGHTS", 1)
    for device, dtype in (("cpu", torch.bfloat16), ("cuda", torch.float32)):
        memory.hold_large_encoder_in(network, torch.device(device), dtype)
        assert next(network.encoder.parameters()).dtype == torch.float32
    memory.hold_large_encoder_in(network, torch.device("cuda"), torch.bfloat16)
    assert {p.dtype for p in network.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in network.head.parameters()} == {torch.float32}
    image = torch.randn(1, 3, 28, 42)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert network(image).shape == (1, 1, 32, 48)


def test_photos_thinner_than_a_patch_get_a_map_of_their_size(files):
    import anydepth_cli
    from test_family_pipelines import lifted_vggt_checkpoint

    model = anydepth_cli.load(lifted_vggt_checkpoint(files["arch"].parent), arch=files["arch"], device="cpu",
                              input_size=70)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, size, dtype=np.uint8) for size in [(5, 3, 3), (1, 200, 3), (300, 2, 3)]]
    for photo, result in zip(photos, model.predict_batch(photos)):
        assert result.map.shape == photo.shape[:2] and np.isfinite(result.map).all()


def test_export_refuses_a_vggt_network_in_one_line(files, tmp_path):
    checkpoint = tmp_path / "net.pth"
    torch.save(vggt_state(), checkpoint)
    result = run_cli("export", "--checkpoint", checkpoint, "--arch", files["arch"], "-o", tmp_path / "m.onnx")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "vggt networks are not exported to ONNX" in result.stderr and not (tmp_path / "m.onnx").exists()


def test_models_lists_the_vggt_encoder_with_its_licence(tmp_path):
    result = run_cli("models", env=cli_env(HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "vggt-1b" in line)
    assert "hf://facebook/VGGT-1B/model.pt" in line and "CC BY-NC 4.0" in line
