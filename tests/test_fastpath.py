"""The inference fast path computes what the network as built computes: each faster kernel against the standard op,
and every fixture architecture, with weights whose outputs vary, against its unfused self."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anydepth_cli.bench.weights import lift_outputs, output_difference, vary_weights
from anydepth_cli.models import fastpath
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.fastpath import FastLinear, GatherDySample, SplitReadout
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.models.network import build_network
from anydepth_cli.models.sdt import DySample
from fixtures_dir import fixtures_dir

FIXTURES = sorted(fixtures_dir().glob("*.json"))
RELATIVE = 1e-5
"""Largest fast-path difference accepted, relative to the output's range: float rounding, nothing more."""


def random_dysample(channels: int, seed: int = 0) -> DySample:
    """A DySample whose offsets reach a few pixels, so that sampling crosses pixels and the border."""
    torch.manual_seed(seed)
    module = DySample(channels).eval()
    with torch.no_grad():
        module.offset.weight.normal_(0, 0.3)
        module.offset.bias.normal_(0, 1.0)
        module.scope.weight.normal_(0, 0.3)
    return module


@pytest.mark.parametrize("batch,channels,height,width", [(1, 32, 37, 37), (2, 16, 5, 9), (1, 64, 2, 3), (3, 8, 14, 2)])
def test_gather_dysample_equals_grid_sample(batch, channels, height, width):
    reference = random_dysample(channels)
    fast = GatherDySample(reference)
    x = torch.randn(batch, channels, height, width).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert fast.applies(x)
        expected, got = reference(x), fast(x)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max() <= 1e-6 * expected.abs().max()
    assert expected.std() > 0.5  # the sampled map is not a constant


def test_gather_dysample_reaches_the_border():
    """Offsets far outside the map clamp to the edge pixels, as grid_sample's border padding does."""
    reference = random_dysample(8)
    with torch.no_grad():
        reference.offset.bias.fill_(50.0)
        reference.scope.weight.zero_()
    x = torch.randn(1, 8, 6, 7).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = reference(x), GatherDySample(reference)(x)
    assert torch.equal(got, expected)
    assert torch.equal(got[:, :, -1, -1], x[:, :, -1, -1])


@pytest.mark.parametrize("case", ["contiguous", "one row", "gradient"])
def test_gather_dysample_falls_back_where_the_gather_does_not_apply(case):
    reference = random_dysample(16)
    fast = GatherDySample(reference)
    x = torch.randn(1, 16, 1 if case == "one row" else 6, 9)
    if case != "contiguous":
        x = x.contiguous(memory_format=torch.channels_last)
    grad = case == "gradient"
    if grad:
        reference.requires_grad_(True)
    with torch.set_grad_enabled(grad):
        assert not fast.applies(x)
        assert torch.equal(fast(x), reference(x))


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_fast_linear_equals_linear(gelu, bias):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias).eval().requires_grad_(False)
    x = torch.randn(2, 33, 48)
    expected = linear(x)
    expected = F.gelu(expected) if gelu else expected
    got = FastLinear(linear, gelu=gelu)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_fast_linear_uses_the_standard_ops_under_autocast_and_with_gradients():
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    fast = FastLinear(linear, gelu=True)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(x)
    assert out.dtype == torch.bfloat16
    fast(x).sum().backward()
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0


def fixture_network(path) -> torch.nn.Module:
    """A fixture's architecture with weights whose outputs vary (and varied BatchNorms, LayerScales, offsets)."""
    config = NetworkConfig.from_file(path)
    torch.manual_seed(0)
    network = vary_weights(build_network(config), seed=1)
    return lift_outputs(network, sample_input(config))


def sample_input(config: NetworkConfig) -> torch.Tensor:
    patch = config.patch_size
    return torch.randn(2, 3, 6 * patch, 7 * patch, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fast_path_equals_the_unfused_network_on_varied_weights(path, monkeypatch):
    network = fixture_network(path)
    fast = prepare_for_inference(copy.deepcopy(network))
    image = sample_input(network.config)
    with torch.inference_mode():
        expected, got = network(image), fast(image)
        monkeypatch.setattr(fastpath, "ONEDNN_LINEAR", False)  # where oneDNN is missing: F.linear, same outputs
        without_onednn = fast(image)
    above_floor = (expected > network.config.output_floor).float().mean()
    assert 0.8 <= above_floor <= 0.97, "the activated output must vary, not sit on the ReLU floor"
    for output in (got, without_onednn):
        difference = output_difference(output, expected)
        assert difference["max_difference_over_range"] <= RELATIVE, difference
    assert any(isinstance(m, FastLinear) for m in fast.modules())
    assert any(isinstance(m, GatherDySample) for m in fast.modules()) == (network.config.head == "sdt")
    assert any(isinstance(m, SplitReadout) for m in fast.modules()) == network.config.cls


def test_lift_outputs_puts_most_of_the_output_above_the_floor():
    config = NetworkConfig.from_file(fixtures_dir() / "tiny_dav2_sdt.json")
    torch.manual_seed(0)
    network = vary_weights(build_network(config))
    with torch.no_grad():
        network.head.output_conv[-1].bias.fill_(-1e3)  # dead: every output on the floor
    image = sample_input(config)
    with torch.inference_mode():
        before = (network(image) > config.output_floor).float().mean()
        lift_outputs(network, image)
        after = (network(image) > config.output_floor).float().mean()
    assert before == 0 and 0.85 <= after <= 0.95
