"""`train --target metric --max-depth M`: a head ending in sigmoid × M, trained with Depth Anything V2's SiLog loss
on depths in metres."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anydepth_cli.errors import UsageError
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.evaluation.folder_run import run_eval
from anydepth_cli.evaluation.unaligned import unaligned_label
from anydepth_cli.datasets import generic
from anydepth_cli.datasets.family import open_set
from anydepth_cli.inference.predictor import DepthPredictor
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.training.loop import train
from anydepth_cli.training.loss import silog_loss
from anydepth_cli.training.options import TrainOptions, training_config
from anydepth_cli.training.report import Reporter
from anydepth_cli.training.sources import metric_range, parse_values
from anydepth_cli.training.start import fresh_network
from anydepth_cli.weights.checkpoint import load_network
from fixtures_dir import fixtures_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
from make_toy_dataset import make_dataset, save_fixture_encoder  # noqa: E402

TINY = "tiny_dinov3_sdt"
RANGE = 10.0


def test_silog_is_their_formula_per_image():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(0.5, 9.0, (2, 6, 7)))
    pred = target * torch.from_numpy(rng.uniform(0.7, 1.4, (2, 6, 7)))
    valid = torch.ones(2, 6, 7, dtype=torch.bool)
    valid[1, :2] = False
    target[0, 0, 0] = 12.0  # beyond the range: not scored
    expected = []
    for i in range(2):
        keep = valid[i] & (target[i] <= RANGE)
        d = torch.log(target[i][keep]) - torch.log(pred[i][keep])
        expected.append(torch.sqrt((d ** 2).mean() - 0.5 * d.mean() ** 2))
    assert float(silog_loss(pred, target, valid, RANGE).total) == pytest.approx(float(torch.stack(expected).mean()))
    assert float(silog_loss(target, target, valid, RANGE).total) < 1e-5
    assert float(silog_loss(2 * target, target, valid, RANGE).total) == pytest.approx(math.log(2) / math.sqrt(2))


def test_a_bare_max_depth_caps_every_dataset_and_is_the_metric_range():
    assert parse_values("20,vkitti=80", "--max-depth", finite=False, bare=True) == {"*": 20.0, "vkitti": 80.0}
    assert metric_range("20,vkitti=80") == 20.0 and metric_range("vkitti=80") is None and metric_range("inf") is None
    with pytest.raises(UsageError):
        parse_values("20", "--mix")
    config = training_config(NetworkConfig.from_file(fixtures_dir() / f"{TINY}.json"), "metric", 20.0)
    assert (config.output, config.activation, config.max_depth) == ("metric", "sigmoid", 20.0)
    with pytest.raises(UsageError, match="--max-depth M"):
        TrainOptions(data=(Path("x"),), output=Path("o"), target="metric", steps=1).check()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    encoder = save_fixture_encoder(root / "encoder.pth", fixtures_dir(), TINY)
    return {"train": make_dataset(root / "train", 32, 0), "val": make_dataset(root / "val", 8, 1), "encoder": encoder}


def unaligned_abs_rel(network, val: Path) -> float:
    predictor = DepthPredictor(network, 56, torch.device("cpu"), torch.float32, 4)
    result = run_eval(open_set(generic.family(), val), {"m": predictor}, get_preset("default"), batch_size=4, unaligned=True)
    return result.aggregates[unaligned_label("m")]["abs_rel"]


def test_a_metric_head_learns_metres(toy, tmp_path):
    arch = fixtures_dir() / f"{TINY}.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        untrained = unaligned_abs_rel(fresh_network(training_config(NetworkConfig.from_file(arch), "metric", RANGE),
                                                    toy["encoder"], 0), toy["val"])
        options = TrainOptions(data=(toy["train"],), output=tmp_path, arch=arch, encoder_weights=toy["encoder"],
                               target="metric", max_depth=f"{RANGE:g}", steps=40, lr=1e-3, input_size=56, workers=0,
                               save_every=10 ** 9)
        train(options, Reporter())
        config = NetworkConfig.from_file(tmp_path / "arch.json")
        assert (config.output, config.activation, config.max_depth) == ("metric", "sigmoid", RANGE)
        trained = unaligned_abs_rel(load_network(config, tmp_path / "model.pth"), toy["val"])
    finally:
        torch.set_num_threads(threads)
    assert trained <= 0.6 * untrained, (untrained, trained)


def test_target_metric_without_a_range_is_one_usage_line(toy, tmp_path):
    done = subprocess.run([sys.executable, "-m", "anydepth_cli", "train", toy["train"], "--target", "metric",
                           "--steps", "1", "-o", tmp_path / "run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--max-depth M" in done.stderr and "Traceback" not in done.stderr
