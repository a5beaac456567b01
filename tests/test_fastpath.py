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
from anydepth_cli.models.fastpath import FastConv, FastLinear, GatherDySample, SplitReadout
from anydepth_cli.models.fuse import cast_network, prepare_for_inference
from anydepth_cli.models.network import build_network
from anydepth_cli.models.sdt import DySample
from fixtures_dir import fixtures_dir

FIXTURES = sorted(fixtures_dir().glob("*.json"))
RELATIVE = 1e-5
"""Largest fast-path difference accepted, relative to the output's range: float rounding, nothing more."""
BF16_ROUNDING = 2.0**-9
"""bf16's relative rounding error (8 significant bits, rounded to nearest)."""
BF16_OVER_AUTOCAST = 1.25
"""The bf16 fast path against fp32 may err by at most this multiple of plain bf16 autocast's error on the network
as built: its casts and fusions round in other places, but it must be no less accurate than autocast."""


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


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("groups", [1, 8])
def test_fast_conv_equals_conv(relu, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, padding=1, groups=groups).eval().requires_grad_(False)
    x = torch.randn(2, 16, 11, 13).contiguous(memory_format=torch.channels_last)
    expected = F.relu(conv(x)) if relu else conv(x)
    got = FastConv(conv, relu)(x)
    assert got.shape == expected.shape and (expected < 0).any() != relu
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_fast_conv_in_bf16_rounds_as_bf16_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, padding=1).eval().requires_grad_(False).to(torch.bfloat16)
    x = torch.randn(1, 32, 20, 20, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = F.relu(conv(x)).float(), FastConv(conv, relu=True)(x)
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max() <= 2 * BF16_ROUNDING * expected.abs().max()


def test_gather_dysample_in_bf16_is_grid_sample_within_bf16_rounding():
    """Positions stay float32; only the four weights and the sum are rounded to bf16, so each output errs by at
    most 5 bf16 roundings of the largest input."""
    reference = random_dysample(32)
    x = torch.randn(1, 32, 23, 19).contiguous(memory_format=torch.channels_last)
    fast = prepare_for_inference_of(reference)
    with torch.inference_mode():
        assert fast.applies(x.bfloat16())
        expected = reference(x.bfloat16().float())
        got = fast(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max() <= 5 * BF16_ROUNDING * x.abs().max()
    assert expected.std() > 0.5


def prepare_for_inference_of(dysample: DySample) -> GatherDySample:
    """A GatherDySample of a bf16 copy of `dysample`, its sub-pixel grid kept float32 as `cast_network` keeps it."""
    fast = GatherDySample(copy.deepcopy(dysample))
    cast_network(fast, torch.bfloat16)
    assert fast.dysample.init_pos.dtype == torch.float32
    return fast


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_bf16_fast_path_is_as_accurate_as_autocast_on_varied_weights(path, monkeypatch):
    network = fixture_network(path)
    fast = prepare_for_inference(copy.deepcopy(network), torch.bfloat16)
    image = sample_input(network.config)
    with torch.inference_mode():
        expected = network(image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = network(image)
        got = fast(image)
        monkeypatch.setattr(fastpath, "ONEDNN_LINEAR", False)
        monkeypatch.setattr(fastpath, "ONEDNN_CONV", False)
        without_onednn = fast(image)
    allowed = BF16_OVER_AUTOCAST * output_difference(autocast, expected)["max_difference_over_range"]
    assert got.dtype == torch.float32 and all(p.dtype == torch.bfloat16 for p in fast.parameters())
    for output in (got, without_onednn):
        difference = output_difference(output, expected)
        assert difference["max_difference_over_range"] <= allowed, (difference, allowed)
    assert any(isinstance(m, FastConv) and m.relu for m in fast.modules())
