"""Every named model has exactly the published keys and shapes; SDT parameter counts match the paper."""

from __future__ import annotations

import json

import pytest
import torch

from anydepth_cli.checkpoint import to_network_keys
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import build_network
from anydepth_cli.models.registry import MODELS, VIT_B, VIT_L, VIT_S
from fixtures_dir import fixtures_dir

PUBLISHED = json.loads((fixtures_dir().parent / "checkpoint_keys.json").read_text())
DINOV3_TRAINED = next(k for k in PUBLISHED if k.startswith("anydepth_dinov3_vitl16"))


def shapes_of(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_network(config, device="meta").state_dict().items()}


def published_shapes(entry: str) -> dict[str, tuple[int, ...]]:
    listed = {k: torch.empty(shape, device="meta") for k, shape in PUBLISHED[entry]["keys"].items()}
    return {k: tuple(v.shape) for k, v in to_network_keys(listed).items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_model_has_published_keys_and_shapes(name):
    spec = MODELS[name]
    assert shapes_of(spec.config) == published_shapes(spec.filename)


def test_dinov3_training_layout_has_listed_keys_and_shapes():
    config = NetworkConfig(**VIT_L, encoder="dinov3", head="sdt", fusion=256, cls=True, detail_enhancer=True,
                           layout="anydepth-train")
    assert shapes_of(config) == published_shapes(DINOV3_TRAINED)


@pytest.mark.parametrize("size,expected", [(VIT_S, 5_517_381), (VIT_B, 9_451_077), (VIT_L, 13_384_261)])
def test_sdt_head_parameter_count_matches_paper(size, expected):
    config = NetworkConfig(**size, head="sdt", fusion=256, cls=True, detail_enhancer=True)
    head = build_network(config, device="meta").head
    assert sum(p.numel() for p in head.parameters()) == expected


def test_unknown_prefix_is_reported():
    from anydepth_cli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="unexpected keys.*stray.weight"):
        to_network_keys({"pretrained.cls_token": torch.zeros(1), "stray.weight": torch.zeros(1)})
