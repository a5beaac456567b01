"""`anydepth doctor --check`: the sample-photo facts, with oracle predictors and the fixture networks."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from anydepth_cli.evaluation import sanity
from anydepth_cli.evaluation.sanity import SAMPLE, check_model, override_hint, read_sample
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.registry import get_model
from conftest import run_cli, tiny_model_args
from fixtures_dir import fixtures_dir

FACTS = ["finite", "not constant", "activation range", "foreground nearer", "flip consistent"]
FIXTURES = ["tiny_dav2_sdt", "tiny_da3_sdt", "tiny_dav2_dpt", "tiny_dinov3_dpt", "tiny_dinov3_sdt"]


class Oracle:
    """A predictor that knows the sample: `depth_map` for the photo, its mirror image (or `mirror_map`) for the mirrored photo."""

    input_size = 518

    def __init__(self, output_kind: str, depth_map: np.ndarray, mirror_map: np.ndarray | None = None) -> None:
        self.output_kind = output_kind
        self.map = depth_map.astype(np.float32)
        self.mirror = np.ascontiguousarray(depth_map[:, ::-1] if mirror_map is None else mirror_map, dtype=np.float32)
        self.photo = read_sample().image

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        maps = []
        for image in images:
            if np.array_equal(image, self.photo):
                maps.append(self.map.copy())
            else:
                assert np.array_equal(image, self.photo[:, ::-1])
                maps.append(self.mirror.copy())
        return maps


@pytest.fixture(scope="module")
def true_depth() -> np.ndarray:
    """Synthetic depth of the sample: the person (from the committed mask, blurred) at 1–1.2, the backdrop at 3–3.2."""
    with Image.open(SAMPLE.mask) as mask:
        person = np.asarray(mask.convert("L").filter(ImageFilter.GaussianBlur(12)), dtype=np.float64) / 255
    rows = np.linspace(0, 0.2, person.shape[0])[:, None]
    return 3 - 2 * person + rows


def _as(kind: str, depth: np.ndarray) -> np.ndarray:
    return depth if kind == "depth" else 1 / depth


def _failed(report: sanity.CheckReport) -> list[str]:
    return [fact.name for fact in report.facts if not fact.passed]


def test_the_mask_marks_a_large_person_and_a_backdrop():
    sample = read_sample()
    assert sample.foreground.mean() > 0.35 and sample.background.mean() > 0.2
    assert not (sample.foreground & sample.background).any()
    assert sample.foreground[300, 256] and sample.background[100, 480] and sample.background[100, 30]


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_a_correctly_declared_model_passes(kind, true_depth):
    report = check_model(Oracle(kind, _as(kind, true_depth)), "relu+0.001")
    assert [fact.name for fact in report.facts] == FACTS
    assert report.passed and not report.inverted, report.facts
    assert "behaves as a " + kind in report.verdict
    assert "correlation 1.000" in report.facts[-1].figure


@pytest.mark.parametrize("kind", ["depth", "disparity"])
def test_the_other_declaration_fails_naming_the_inversion(kind, true_depth):
    declared = sanity.other_kind(kind)
    report = check_model(Oracle(declared, _as(kind, true_depth)), "relu")
    assert _failed(report) == ["foreground nearer"]
    assert report.inverted
    assert f"declared output kind ({declared}) is probably inverted" in report.verdict


def test_a_farther_foreground_in_an_unsound_map_is_not_called_inverted(true_depth):
    noise = np.random.default_rng(0).uniform(1, 3, true_depth.shape)
    report = check_model(Oracle("disparity", true_depth, mirror_map=noise), "relu")
    assert _failed(report) == ["foreground nearer", "flip consistent"]
    assert not report.inverted and "inverted" not in report.verdict


def test_a_constant_map_fails():
    report = check_model(Oracle("depth", np.full((600, 512), 0.5)), "relu+0.001")
    assert _failed(report) == ["not constant", "foreground nearer", "flip consistent"]
    assert not report.inverted and "flat" in report.facts[1].figure


@pytest.mark.parametrize(("offset", "activation", "holds"), [
    (-1.0, "relu", True),         # minimum 0
    (-1.0 - 1e-6, "relu", True),  # rounding below the floor is tolerated
    (-1.0, "relu+0.001", False),  # minimum 0, under the floor 0.001
    (-1.5, "relu", False),        # negative values
])
def test_values_below_the_activation_floor_fail(offset, activation, holds, true_depth):
    depth = true_depth - true_depth.min() + 1 + offset
    report = check_model(Oracle("depth", depth), activation)
    assert _failed(report) == ([] if holds else ["activation range"]), report.facts


def test_non_finite_values_fail(true_depth):
    depth = true_depth.copy()
    depth[:10, :10] = np.nan
    report = check_model(Oracle("depth", depth), "relu+0.001")
    assert _failed(report) == ["finite"]
    assert report.facts[0].figure.startswith("100 of 307,200")
    report = check_model(Oracle("depth", np.full((600, 512), np.inf)), "relu")
    assert _failed(report) == FACTS


def _config_file(path: Path, wrapped: bool) -> Path:
    config = json.loads((fixtures_dir() / "tiny_dav2_sdt.json").read_text())["config"]
    path.write_text(json.dumps({"config": config} if wrapped else config))
    return path


@pytest.mark.parametrize("wrapped", [True, False])
def test_the_hint_for_an_arch_file_is_the_edit_that_works(wrapped, tmp_path):
    arch = _config_file(tmp_path / "arch.json", wrapped)
    hint = override_hint(NetworkConfig.from_file(arch), arch, "w.pth")
    assert f'add "output": "disparity" to {arch}' in hint
    arch.write_text(json.dumps({**json.loads(arch.read_text()), "output": "disparity"}))
    assert NetworkConfig.from_file(arch).output == "disparity"


def test_the_hint_for_a_registry_model_gives_a_working_arch_file(tmp_path):
    spec = get_model("anydepth-dav2-vitb")
    hint = override_hint(spec.config, None, "hf://AIGeeksGroup/AnyDepth/dav2_sdt_vitb.pth")
    assert "--checkpoint hf://AIGeeksGroup/AnyDepth/dav2_sdt_vitb.pth --arch arch.json" in hint
    arch = tmp_path / "arch.json"
    arch.write_text(hint[hint.index("{"): hint.rindex("}") + 1])
    config = NetworkConfig.from_file(arch)
    assert config.output == "disparity" and config.activation == spec.config.activation
    assert {**config.to_dict(), "output": "depth"} == spec.config.to_dict()


@pytest.mark.parametrize(("args", "fix"), [
    (tiny_model_args(), 'add "output": "disparity" to'),
    (["--model", "anydepth-dav2-vitb"], "--checkpoint hf://AIGeeksGroup/AnyDepth/dav2_sdt_vitb.pth --arch arch.json"),
])
def test_the_cli_prints_the_inversion_and_its_fix(args, fix, monkeypatch, true_depth):
    from anydepth_cli.cli import app
    from anydepth_cli.pipelines import runtime

    monkeypatch.setattr(runtime, "open_predictor", lambda *args, **kwargs: (Oracle("depth", 1 / true_depth), "oracle"))
    result = CliRunner().invoke(app, ["doctor", "--check", *args])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == ["pass", "pass", "pass", "FAIL", "pass"]
    assert lines[6].startswith("verdict: 1 of 5 facts fail (foreground nearer): the declared output kind (depth)")
    assert lines[7].startswith("hint: if the model outputs disparity, ")
    assert fix in lines[7]
    result = CliRunner().invoke(app, ["doctor", "--check", "--json", *args])
    report = json.loads(result.output)
    assert result.exit_code == 1 and report["inverted"] and fix in report["hint"]
    assert [fact["passed"] for fact in report["facts"]] == [True, True, True, False, True]


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_network_is_checked(name):
    from anydepth_cli.pipelines.runtime import open_predictor

    arch = fixtures_dir() / f"{name}.json"
    predictor, _ = open_predictor(None, str(fixtures_dir() / f"{name}.pth"), arch, "cpu", input_size=70)
    report = check_model(predictor, NetworkConfig.from_file(arch).activation)
    assert [fact.name for fact in report.facts] == FACTS and report.verdict


def test_fixture_networks_run_through_the_cli():
    """A depth (SDT, relu+0.001) and a disparity (DPT, relu) network, as a user runs them."""
    def check(name: str):
        return run_cli("doctor", "--check", *tiny_model_args(name), "--input-size", "70", "--device", "cpu")

    names = ["tiny_dav2_sdt", "tiny_dav2_dpt"]
    with ThreadPoolExecutor(len(names)) as pool:
        results = dict(zip(names, pool.map(check, names)))
    for name, result in results.items():
        assert result.returncode in (0, 1), f"{name}: {result.stderr}"
        assert "Traceback" not in result.stdout + result.stderr, name
        lines = result.stdout.splitlines()
        assert [line.split("  ")[1].strip() for line in lines[1:6]] == FACTS, result.stdout
        assert lines[6].startswith("verdict: ") and (result.returncode == 0) == ("behaves as" in lines[6])


@pytest.mark.parametrize("args", [["--model", "anydepth-dav2-vitb"], ["--check", "--arch", "x.json"],
                                  ["--check", "--model", "nope"]])
def test_usage_errors_are_one_line(args):
    result = run_cli("doctor", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
