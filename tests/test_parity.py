"""Parity with the shared fixtures: every *.json in $ANYDEPTH_FIXTURES_DIR (default ../shared/fixtures)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anydepth_cli.weights.checkpoint import load_network
from anydepth_cli.models.config import NetworkConfig
from fixtures_dir import fixtures_dir

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
