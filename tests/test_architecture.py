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


@pytest.mark.parametrize("config", [
    NetworkConfig(embed=48, depth=3, heads=3, layers=(0, 2, 1, 2), head="sdt", fusion=16, cls=True,
                  detail_enhancer=True, encoder_norm=True),
    NetworkConfig(embed=96, depth=5, heads=2, layers=(1, 2, 3, 4), head="dpt", features=24, out_channels=(8, 16, 24, 32),
                  cls=True),
    NetworkConfig(embed=64, depth=2, heads=4, layers=(0, 0, 1, 1), head="sdt", fusion=24, encoder="dinov3"),
    NetworkConfig(embed=32, depth=2, heads=2, layers=(0, 1, 1, 1), head="dpt", features=16, out_channels=(8, 8, 8, 8),
                  encoder="dinov3", encoder_norm=True),
], ids=["dinov2-sdt", "dinov2-dpt", "dinov3-sdt", "dinov3-dpt"])
def test_batches_equal_single_images_for_any_config(config):
    torch.manual_seed(0)
    network = build_network(config)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    side = config.patch_size
    images = torch.randn(3, 3, 5 * side, 7 * side)
    with torch.inference_mode():
        batch = network(images)
        singles = torch.cat([network(images[i: i + 1]) for i in range(3)])
    expected_side = 16 if config.head == "sdt" else side
    assert batch.shape == (3, 1, 5 * expected_side, 7 * expected_side)
    torch.testing.assert_close(batch, singles, rtol=1e-4, atol=1e-4)
