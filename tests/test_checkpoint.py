"""Checkpoint reading: wrappers, prefix layouts, safetensors, strictness and refusal of pickled objects."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from anydepth_cli.weights.checkpoint import load_network, read_state_dict
from anydepth_cli.errors import CheckpointError
from anydepth_cli.models.config import NetworkConfig
from fixtures_dir import fixtures_dir

FIXTURE = fixtures_dir() / "tiny_dav2_sdt.json"
CONFIG = NetworkConfig.from_file(FIXTURE)


@pytest.fixture(scope="module")
def state():
    return read_state_dict(fixtures_dir() / json.loads(FIXTURE.read_text())["checkpoint"])


def reference_output(network):
    torch.manual_seed(0)
    with torch.inference_mode():
        return network(torch.randn(1, 3, 70, 98))


@pytest.fixture(scope="module")
def expected(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "plain.pth"
    torch.save(state, path)
    return reference_output(load_network(CONFIG, path))


@pytest.mark.parametrize("layout", ["state_dict", "da3", "da3-model", "train", "module", "safetensors"])
def test_every_layout_loads_to_the_same_network(layout, state, expected, tmp_path):
    renames = {
        "da3": ("backbone.pretrained.", "head."),
        "da3-model": ("model.backbone.pretrained.", "model.head."),
        "train": ("0.encoder.backbone.", "0.decoder."),
    }
    data = dict(state)
    if layout in renames:
        enc, head = renames[layout]
        data = {k.replace("pretrained.", enc, 1) if k.startswith("pretrained.") else k.replace("depth_head.", head, 1): v
                for k, v in data.items()}
    if layout == "module":
        data = {"module." + k: v for k, v in data.items()}
    path = tmp_path / "ckpt.pth"
    if layout == "safetensors":
        path = tmp_path / "ckpt.safetensors"
        save_file({k: v.contiguous() for k, v in data.items()}, str(path))
    elif layout == "state_dict":
        torch.save({"state_dict": data, "epoch": 3, "note": "extra"}, path)
    else:
        torch.save(data, path)
    assert torch.equal(reference_output(load_network(CONFIG, path)), expected)


def test_missing_mask_token_is_allowed(state, expected, tmp_path):
    data = {k: v for k, v in state.items() if not k.endswith("mask_token")}
    torch.save(data, tmp_path / "c.pth")
    assert torch.equal(reference_output(load_network(CONFIG, tmp_path / "c.pth")), expected)


def test_missing_and_unexpected_keys_are_named(state, tmp_path):
    data = dict(state)
    del data["depth_head.refinement_1.0.bias"]
    data["depth_head.extra.weight"] = torch.zeros(2)
    torch.save(data, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"missing head\.refinement_1\.0\.bias.*unexpected head\.extra\.weight"):
        load_network(CONFIG, tmp_path / "c.pth")


def test_wrong_shape_is_named(state, tmp_path):
    data = dict(state)
    data["depth_head.weighted_fusion.layer_weights"] = torch.zeros(5)
    torch.save(data, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="wrong shape head.weighted_fusion.layer_weights"):
        load_network(CONFIG, tmp_path / "c.pth")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", pickle.dumps([1, 2, 3])])
def test_garbage_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
