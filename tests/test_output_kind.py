"""What each model's output means: declared per model, defaulted by head, overridable in an arch file."""

from __future__ import annotations

import json

import pytest

from anydepth_cli.errors import UsageError
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.registry import MODELS
from fixtures_dir import fixtures_dir

EXPECTED = {
    "anydepth-dav2-vitb": ("depth", "relu+0.001"), "anydepth-da3-vitl": ("depth", "relu+0.001"),
    "dav2-dpt-vits": ("disparity", "relu"), "dav2-dpt-vitb": ("disparity", "relu"),
    "dav2-dpt-vitl": ("disparity", "relu"),
    **{f"dav2-metric-{dataset}-{size}": ("metric", "sigmoid") for dataset in ("hypersim", "vkitti")
       for size in ("vits", "vitb", "vitl")},
}


def test_every_registry_model_declares_its_kind_and_activation():
    assert {name: (spec.output, spec.config.activation) for name, spec in MODELS.items()} == EXPECTED
    assert all(spec.evidence for spec in MODELS.values())


@pytest.mark.parametrize("fixture,kind,floor", [
    ("tiny_dav2_sdt", "depth", 0.001), ("tiny_da3_sdt", "depth", 0.001), ("tiny_dinov3_sdt", "depth", 0.001),
    ("tiny_dinov3_dpt", "depth", 0.001), ("tiny_dav2_dpt", "disparity", 0.0),
])
def test_fixture_configs_default_by_head(fixture, kind, floor):
    config = NetworkConfig.from_file(fixtures_dir() / f"{fixture}.json")
    assert (config.output, config.output_floor) == (kind, floor)


def test_arch_files_override_the_kind_flat_inside_config_or_beside_it(tmp_path):
    base = json.loads((fixtures_dir() / "tiny_dav2_sdt.json").read_text())["config"]
    cases = {
        "flat": {**base, "output": "disparity"},
        "inside": {"config": {**base, "output": "disparity"}},
        "beside": {"config": base, "output": "disparity", "activation": "relu"},
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        config = NetworkConfig.from_file(path)
        assert config.output == "disparity", name
        assert config.activation == ("relu" if name == "beside" else "relu+0.001"), name


@pytest.mark.parametrize("key,value", [("output", "inverse-depth"), ("activation", "tanh")])
def test_unknown_kinds_and_activations_are_usage_errors(key, value):
    base = json.loads((fixtures_dir() / "tiny_dav2_sdt.json").read_text())["config"]
    with pytest.raises(UsageError, match=key):
        NetworkConfig.from_dict({**base, key: value})
