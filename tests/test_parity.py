"""Parity with the shared fixtures: every *.json in $ANYDEPTH_FIXTURES_DIR (default ../shared/fixtures)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anydepth_cli.weights.checkpoint import load_network
from anydepth_cli.models.config import NetworkConfig
from fixtures_dir import fixtures_dir
from vggt_fixture import VGGT_FIXTURE, vggt_arrays, vggt_config, write_vggt_checkpoint

TOLERANCE = 1e-3
FIXTURES = sorted(fixtures_dir().glob("*.json"))


def cases():
    for path in FIXTURES:
        meta = json.loads(path.read_text())
        for case in meta["cases"]:
            yield pytest.param(path, case["index"], id=f"{path.stem}-case{case['index']}")


def test_fixtures_are_present():
    assert FIXTURES, f"no fixtures found in {fixtures_dir()}"


@pytest.mark.parametrize("path,index", list(cases()))
def test_fixture_output_matches(path, index):
    meta = json.loads(path.read_text())
    network = load_network(NetworkConfig.from_file(path), path.parent / meta["checkpoint"])
    arrays = np.load(path.parent / meta["arrays"])
    image = torch.from_numpy(arrays[f"input_{index}"]).float()
    with torch.inference_mode():
        features, grid = network.encoder(image)
        output = network.head(features, grid)
    expected = arrays[f"output_{index}"]
    for layer, (tokens, _) in enumerate(features):
        reference = arrays[f"feat{layer}_patch_{index}"]
        patch = tokens.transpose(1, 2).reshape(reference.shape).numpy()
        assert np.abs(patch - reference).max() <= TOLERANCE, f"encoder output {layer} differs"
    assert tuple(output.shape) == expected.shape
    assert np.abs(output.numpy() - expected).max() <= TOLERANCE


@pytest.mark.parametrize("path,index", list(cases()))
def test_inference_fast_path_keeps_fixture_output(path, index):
    from anydepth_cli.models.fuse import prepare_for_inference

    meta = json.loads(path.read_text())
    network = prepare_for_inference(load_network(NetworkConfig.from_file(path), path.parent / meta["checkpoint"]))
    arrays = np.load(path.parent / meta["arrays"])
    image = torch.from_numpy(arrays[f"input_{index}"]).float()
    expected = arrays[f"output_{index}"]
    with torch.inference_mode():
        raw, activated = network.raw(image).numpy(), network(image).numpy()
    assert np.abs(raw - expected).max() <= TOLERANCE
    floor = network.config.output_floor
    assert np.abs(activated - (np.maximum(expected, 0) + floor)).max() <= TOLERANCE
    assert activated.min() >= floor
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())


VGGT_TOLERANCE = 1e-4
"""The VGGT fixture's encoder outputs come from VGGT's own Aggregator: ours must agree to this."""


def vggt_cases():
    arrays = vggt_arrays()
    return sorted(int(k.rsplit("_", 1)[1]) for k in arrays.files if k.startswith("input_"))


@pytest.fixture(scope="module")
def vggt_checkpoint(tmp_path_factory):
    return write_vggt_checkpoint(tmp_path_factory.mktemp("vggt"))


@pytest.fixture(scope="module")
def vggt_network(vggt_checkpoint):
    return load_network(vggt_config(), vggt_checkpoint)


def test_vggt_fixture_covers_a_batch_a_portrait_and_a_very_wide_photo():
    shapes = [vggt_arrays()[f"input_{i}"].shape for i in vggt_cases()]
    assert any(b >= 2 for b, _, _, _ in shapes)
    assert any(h > w for _, _, h, w in shapes)
    assert any(w >= 10 * h for _, _, h, w in shapes)
    assert VGGT_FIXTURE.stat().st_size < 1_000_000


@pytest.mark.parametrize("index", vggt_cases())
def test_vggt_encoder_matches_vggt_aggregator(vggt_network, index):
    arrays = vggt_arrays()
    image = torch.from_numpy(arrays[f"input_{index}"])
    with torch.inference_mode():
        features, grid = vggt_network.encoder(image)
        output = vggt_network.head(features, grid)
    for layer, (tokens, _) in enumerate(features):
        reference = arrays[f"feat{layer}_patch_{index}"]
        assert reference.shape[1] == 2 * vggt_network.config.embed
        assert reference.std() > 0.5, "degenerate reference features"
        patch = tokens.transpose(1, 2).reshape(reference.shape).numpy()
        assert np.abs(patch - reference).max() <= VGGT_TOLERANCE, f"encoder output {layer} differs"
    expected = arrays[f"output_{index}"]
    assert np.abs(output.numpy() - expected).max() <= VGGT_TOLERANCE
    assert np.mean(expected > 0) > 0.5 and expected.std() > 0


@pytest.mark.parametrize("index", vggt_cases())
def test_vggt_inference_fast_path_keeps_fixture_output(vggt_checkpoint, index):
    from anydepth_cli.models.fuse import prepare_for_inference

    network = prepare_for_inference(load_network(vggt_config(), vggt_checkpoint))
    arrays = vggt_arrays()
    with torch.inference_mode():
        raw = network.raw(torch.from_numpy(arrays[f"input_{index}"])).numpy()
    assert np.abs(raw - arrays[f"output_{index}"]).max() <= VGGT_TOLERANCE


VGGT_DPT_FIXTURE = VGGT_FIXTURE.with_name("tiny_vggt_dpt_head.npz")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_vggt_dpt_head_matches_vggts_depth_head(index):
    from anydepth_cli.models.dpt_vggt import DPTVGGTHead

    arrays = np.load(VGGT_DPT_FIXTURE)
    size = json.loads(str(arrays["head"]))
    head = DPTVGGTHead(size["dim"], size["features"], tuple(size["out_channels"]), size["outputs"]).eval()
    prefix = "state/depth_head."
    head.load_state_dict({k[len(prefix):]: torch.from_numpy(arrays[k]) for k in arrays.files if k.startswith(prefix)},
                         strict=True)
    tokens = [torch.from_numpy(arrays[f"tokens{j}_{index}"]) for j in range(4)]
    expected = arrays[f"output_{index}"]
    b, _, height, width = expected.shape
    with torch.inference_mode():
        output = head([(t, t[:, 0]) for t in tokens], (height // 14, width // 14)).numpy()
    assert output.shape == expected.shape and expected.std() > 0.1
    assert np.abs(output - expected).max() <= VGGT_TOLERANCE
