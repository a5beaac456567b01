"""Every named model has exactly the published keys and shapes; SDT parameter counts match the paper."""

from __future__ import annotations

import json

import pytest
import torch

from anydepth_cli.weights.checkpoint import to_network_keys
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import build_network
from anydepth_cli.models.registry import MODELS, VIT_B, VIT_L, VIT_S
from fixtures_dir import fixtures_dir

PUBLISHED = json.loads((fixtures_dir().parent / "checkpoint_keys.json").read_text())
DINOV3_SDT = next(k for k in PUBLISHED if k.startswith("anydepth_dinov3_vitl16_sdt"))
DINOV3_DPT = next(k for k in PUBLISHED if k.startswith("anydepth_dinov3_vitl16_dpt"))


def paper_dpt(size: dict) -> NetworkConfig:
    """The paper's DPT baseline: DINOv3's DPT head, 512 channels, post-process channels [C]×4, readout, BatchNorm."""
    return NetworkConfig(**size, encoder="dinov3", head="dpt-dinov3", features=512, out_channels=(size["embed"],) * 4,
                         cls=True, batchnorm=True, outputs=1, layout="anydepth-train")


def shapes_of(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_network(config, device="meta").state_dict().items()}


def published_shapes(entry: str) -> dict[str, tuple[int, ...]]:
    listed = {k: torch.empty(shape, device="meta") for k, shape in PUBLISHED[entry]["keys"].items()}
    return {k: tuple(v.shape) for k, v in to_network_keys(listed).items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_registry_model_has_published_keys_and_shapes(name):
    """Depth Anything V2's metric checkpoints have the keys of the relative ones of their size (their head's last
    layer, a sigmoid instead of a ReLU, holds no weights)."""
    spec = MODELS[name]
    listed = spec.filename.replace("_metric_hypersim", "").replace("_metric_vkitti", "")
    assert shapes_of(spec.config) == published_shapes(listed)


def test_dinov3_training_layout_has_listed_keys_and_shapes():
    config = NetworkConfig(**VIT_L, encoder="dinov3", head="sdt", fusion=256, cls=True, detail_enhancer=True,
                           layout="anydepth-train")
    assert shapes_of(config) == published_shapes(DINOV3_SDT)


def test_dinov3_dpt_training_layout_has_listed_keys_and_shapes():
    assert shapes_of(paper_dpt(VIT_L)) == published_shapes(DINOV3_DPT)


@pytest.mark.parametrize("size,expected", [(VIT_S, 50_825_153), (VIT_B, 76_047_425), (VIT_L, 99_579_713)])
def test_paper_dpt_head_parameter_count_matches_paper(size, expected):
    head = build_network(paper_dpt(size), device="meta").head
    assert sum(p.numel() for p in head.parameters()) == expected
    width = size["embed"]
    assert expected == 41 * width**2 + 18_451 * width + 37_694_273


@pytest.mark.parametrize("size,expected", [(VIT_S, 5_517_381), (VIT_B, 9_451_077), (VIT_L, 13_384_261)])
def test_sdt_head_parameter_count_matches_paper(size, expected):
    config = NetworkConfig(**size, head="sdt", fusion=256, cls=True, detail_enhancer=True)
    head = build_network(config, device="meta").head
    assert sum(p.numel() for p in head.parameters()) == expected


def test_unknown_prefix_is_reported():
    from anydepth_cli.errors import CheckpointError

    with pytest.raises(CheckpointError, match="unexpected keys.*stray.weight"):
        to_network_keys({"pretrained.cls_token": torch.zeros(1), "stray.weight": torch.zeros(1)})


def expected_output_size(config: NetworkConfig, grid: tuple[int, int]) -> tuple[int, int]:
    """SDT: 16 per patch; Depth Anything's DPT: one patch size per patch; DINOv3's DPT: 32 per two patches,
    rounded up (its stride-2 level rounds an odd side up)."""
    if config.head == "sdt":
        return grid[0] * 16, grid[1] * 16
    if config.head == "dpt":
        return grid[0] * config.patch_size, grid[1] * config.patch_size
    return 32 * -(-grid[0] // 2), 32 * -(-grid[1] // 2)


@pytest.mark.parametrize("config", [
    NetworkConfig(embed=48, depth=3, heads=3, layers=(0, 2, 1, 2), head="sdt", fusion=16, cls=True,
                  detail_enhancer=True, encoder_norm=True),
    NetworkConfig(embed=96, depth=5, heads=2, layers=(1, 2, 3, 4), head="dpt", features=24, out_channels=(8, 16, 24, 32),
                  cls=True),
    NetworkConfig(embed=64, depth=2, heads=4, layers=(0, 0, 1, 1), head="sdt", fusion=24, encoder="dinov3"),
    NetworkConfig(embed=32, depth=2, heads=2, layers=(0, 1, 1, 1), head="dpt", features=16, out_channels=(8, 8, 8, 8),
                  encoder="dinov3", encoder_norm=True),
    NetworkConfig(embed=48, depth=3, heads=2, layers=(2, 0, 1, 2), head="dpt-dinov3", features=20,
                  out_channels=(8, 12, 16, 24), cls=True, batchnorm=True, outputs=1, encoder="dinov3"),
    NetworkConfig(embed=32, depth=2, heads=2, layers=(0, 1, 1, 1), head="dpt-dinov3", features=16,
                  out_channels=(8, 8, 8, 8), cls=False, batchnorm=False, encoder="dinov3", encoder_norm=True),
], ids=["dinov2-sdt", "dinov2-dpt", "dinov3-sdt", "dinov3-dpt", "dinov3-dpt-dinov3", "dinov3-dpt-dinov3-plain"])
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
    assert batch.shape == (3, 1, *expected_output_size(config, (5, 7)))
    torch.testing.assert_close(batch, singles, rtol=1e-4, atol=1e-4)
