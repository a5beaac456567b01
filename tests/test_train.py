"""`anydepth train`: the loss, the data order, learning, resume after kill -9, DDP equality and bad input."""

from __future__ import annotations

import json
import math
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth_cli.inference.align import fit_scale_shift
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.training import run
from anydepth_cli.training.data import Mix, epoch_batches
from anydepth_cli.training.distributed import World
from anydepth_cli.training.loop import fresh_network, training_config
from anydepth_cli.training.loss import depth_loss, fit_scale_shift_batch
from anydepth_cli.weights.checkpoint import load_network
from conftest import TINY, cli_env, run_cli
from fixtures_dir import REPO, fixtures_dir

sys.path.insert(0, str(REPO / "tools"))
from make_toy_dataset import make_dataset, save_fixture_encoder  # noqa: E402

ARCH = fixtures_dir() / f"{TINY}.json"
MEMORY_LIMIT = 6 << 30
"""Address-space limit of every training child (torchrun's workers inherit it)."""


def train_env() -> dict[str, str]:
    """The CLI's test environment with one thread per process, so two torchrun workers share the two cores."""
    return {**cli_env(), "OMP_NUM_THREADS": "1"}


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def train_cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "anydepth_cli", "train", *map(str, args)]


def run_train(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*args), capture_output=True, text=True, env=train_env(),
                          timeout=timeout, preexec_fn=limit_memory)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-data")
    encoder = save_fixture_encoder(root / "encoder.pth", fixtures_dir())
    return {"train": make_dataset(root / "train", 32, 0), "val": make_dataset(root / "val", 8, 1), "encoder": encoder}


def fresh_args(data: dict[str, Path], size: int, steps: int, *extra: object) -> list[object]:
    return [data["train"], "--arch", ARCH, "--encoder-weights", data["encoder"], "--input-size", size, "--steps", steps,
            "--lr", "1e-3", "--workers", 0, *extra]


def max_difference(a: Path, b: Path) -> float:
    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first)


# ---------------------------------------------------------------------------------------------- loss


def test_batched_fit_matches_the_inference_fit():
    torch.manual_seed(0)
    pred, target = torch.rand(3, 10, 12, dtype=torch.float64), torch.rand(3, 10, 12, dtype=torch.float64)
    valid = torch.rand(3, 10, 12) > 0.3
    scale, shift = fit_scale_shift_batch(pred, target, valid)
    for i in range(3):
        fit = fit_scale_shift(pred[i][valid[i]].numpy(), target[i][valid[i]].numpy())
        assert scale[i].item() == pytest.approx(fit.scale, rel=1e-9)
        assert shift[i].item() == pytest.approx(fit.shift, rel=1e-9, abs=1e-12)


def test_loss_is_scale_and_shift_invariant_and_zero_for_an_affine_prediction():
    torch.manual_seed(0)
    target = torch.rand(2, 16, 16, dtype=torch.float64) + 0.5
    valid = torch.rand(2, 16, 16) > 0.2
    pred = torch.rand(2, 16, 16, dtype=torch.float64)
    assert depth_loss(3.0 * pred + 7.0, target, valid).total.item() == pytest.approx(
        depth_loss(pred, target, valid).total.item(), rel=1e-9)
    assert depth_loss(0.2 * target - 1.0, target, valid).total.item() == pytest.approx(0.0, abs=1e-9)
    assert depth_loss(pred, target, valid).gradient.item() > 0


def test_batch_loss_is_the_mean_of_per_image_losses_whatever_the_split():
    torch.manual_seed(1)
    pred, target = torch.rand(4, 12, 12, dtype=torch.float64), torch.rand(4, 12, 12, dtype=torch.float64) + 1
    valid = torch.rand(4, 12, 12) > 0.3
    valid[3] = False  # no valid pixel: counts 0
    whole = depth_loss(pred, target, valid).total
    halves = (depth_loss(pred[:2], target[:2], valid[:2]).total + depth_loss(pred[2:], target[2:], valid[2:]).total) / 2
    assert whole.item() == pytest.approx(halves.item(), rel=1e-12)


def test_every_world_size_sees_the_same_global_batches():
    single = epoch_batches(Mix((37,)), 4, World(), epoch=3, seed=5)
    split = [epoch_batches(Mix((37,)), 2, World(rank, 2), epoch=3, seed=5) for rank in range(2)]
    assert len(single) == len(split[0]) == len(split[1]) == 9
    for k, batch in enumerate(single):
        assert sorted(batch) == sorted(split[0][k] + split[1][k])


# ------------------------------------------------------------------------------------------ learning


@pytest.mark.slow
def test_training_beats_the_untrained_head_on_held_out_data(data, tmp_path):
    output = tmp_path / "run"
    done = run_train(*fresh_args(data, 56, 100, "--batch-size", 4, "--val", data["val"], "--val-every", 50,
                                 "--save-every", 50), "-o", output)
    assert done.returncode == 0, done.stderr
    arch = json.loads((output / "arch.json").read_text())
    assert (arch["output"], arch["activation"], arch["layout"]) == ("depth", "relu+0.001", "anydepth-train")
    assert all(k.startswith(("0.encoder.backbone.", "0.decoder.")) for k in torch.load(output / "model.pth"))
    rows = (output / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,val_abs_rel,val_delta1" and len(rows) == 101
    assert (output / "loss.png").stat().st_size > 0 and "best val" in done.stderr

    config = training_config(NetworkConfig.from_file(ARCH), "depth")
    untrained = tmp_path / "untrained"
    run.save_model(untrained, fresh_network(config, data["encoder"], seed=0))
    run.write_arch(untrained, config)
    abs_rel = {}
    for name, folder in (("untrained", untrained), ("trained", output)):
        evaluated = run_cli("eval", data["val"], "--checkpoint", folder / "model.pth", "--arch", folder / "arch.json",
                            "--input-size", 56, "-o", tmp_path / f"eval-{name}")
        assert evaluated.returncode == 0, evaluated.stderr
        summary = (tmp_path / f"eval-{name}" / "eval_per_image.csv").read_text().splitlines()
        header = summary[0].split(",")
        abs_rel[name] = np.mean([float(line.split(",")[header.index("abs_rel")]) for line in summary[1:]])
    print(f"held-out AbsRel: untrained {abs_rel['untrained']:.4f}, trained {abs_rel['trained']:.4f}")
    assert abs_rel["trained"] <= 0.6 * abs_rel["untrained"]


# ------------------------------------------------------------------------------------ resume and kill


@pytest.mark.slow
def test_kill_9_leaves_a_loadable_run_and_resume_equals_an_uninterrupted_run(data, tmp_path):
    args = fresh_args(data, 28, 40, "--batch-size", 4, "--save-every", 4)
    whole = run_train(*args, "-o", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = tmp_path / "killed"
    child = subprocess.Popen(train_cmd(*args, "-o", killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=train_env(), preexec_fn=limit_memory)
    deadline = time.monotonic() + 120
    while not (killed / "last.pth").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    state = torch.load(killed / "last.pth", weights_only=True)
    assert 4 <= state["step"] < 40, "the run ended before it could be killed"
    load_network(NetworkConfig.from_file(killed / "arch.json"), killed / "model.pth")

    resumed = run_train(data["train"], "--resume", killed, "--workers", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed at {state['step']}" in resumed.stderr
    difference = max_difference(tmp_path / "whole" / "model.pth", killed / "model.pth")
    print(f"resumed at step {state['step']}: max |Δw| = {difference:.3g}")
    assert difference <= 1e-6
    assert len((killed / "metrics.csv").read_text().splitlines()) == 41


# ---------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_two_torchrun_processes_give_the_weights_of_one(data, tmp_path):
    args = fresh_args(data, 28, 6, "--save-every", 3, "--precision", "fp64")
    single = run_train(*args, "--batch-size", 4, "-o", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *train_cmd(*args, "--batch-size", 2, "-o", tmp_path / "two")[1:]],
                         capture_output=True, text=True, env=train_env(), timeout=150,
                         preexec_fn=limit_memory)
    assert two.returncode == 0, two.stderr
    assert two.stderr.count("trained ") == 1  # only rank 0 prints
    difference = max_difference(tmp_path / "one" / "model.pth", tmp_path / "two" / "model.pth")
    print(f"1 process × batch 4 vs 2 processes × batch 2: max |Δw| = {difference:.3g}")
    assert difference <= 1e-5


# ---------------------------------------------------------------------------------------- bad input


def write_sample(folder: Path, name: str, image: np.ndarray, depth: np.ndarray) -> None:
    (folder / "image").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(exist_ok=True)
    Image.fromarray(image).save(folder / "image" / f"{name}.png")
    np.save(folder / "depth" / f"{name}.npy", depth)


@pytest.mark.slow
def test_bad_samples_are_skipped_counted_and_named(data, tmp_path):
    folder = tmp_path / "mixed"
    rgb = np.full((40, 40, 3), 128, np.uint8)
    depth = np.linspace(1, 3, 1600, dtype=np.float32).reshape(40, 40)
    for i in range(4):
        write_sample(folder, f"good{i}", rgb, depth)
    holes = depth.copy()
    holes[:5] = np.nan
    holes[5:10] = np.inf
    holes[10:15] = 0
    write_sample(folder, "holes", rgb, holes)
    write_sample(folder, "empty", rgb, np.zeros((40, 40), np.float32))
    write_sample(folder, "mismatch", rgb, np.ones((20, 20), np.float32))
    write_sample(folder, "broken", rgb, depth)
    (folder / "image" / "broken.png").write_bytes(b"not a png")
    done = run_train(folder, "--arch", ARCH, "--encoder-weights", data["encoder"], "--input-size", 28, "--steps", 2,
                     "--workers", 0, "-o", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert "5 of 8 sample(s) to train on, 1 without a valid pixel, 2 unreadable" in done.stderr
    assert "skipped" in done.stderr and "broken.png" in done.stderr and "mismatch.png" in done.stderr


@pytest.mark.slow
def test_keep_drops_and_reports_the_worst_ground_truth(data, tmp_path):
    done = run_train(*fresh_args(data, 28, 1, "--keep", 0.8), "-o", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    dropped = [line for line in (tmp_path / "run" / "dropped.txt").read_text().splitlines() if not line.startswith("#")]
    assert 6 <= len(dropped) <= 13 and f"{32 - len(dropped)} of 32 sample(s)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("empty", "no image/depth pairs"),
    ("no-length", "--steps N and/or --epochs N"),
    ("arch-alone", "--arch needs --checkpoint"),
    ("bad-target", "--target must be depth or disparity"),
])
def test_usage_errors_are_one_line_with_status_2(case, message, data, tmp_path):
    (tmp_path / "nothing").mkdir()
    args = {
        "empty": [tmp_path / "nothing", "--arch", ARCH, "--encoder-weights", data["encoder"], "--steps", 1],
        "no-length": [data["train"], "--arch", ARCH, "--encoder-weights", data["encoder"]],
        "arch-alone": [data["train"], "--arch", ARCH, "--steps", 1],
        "bad-target": [data["train"], "--arch", ARCH, "--encoder-weights", data["encoder"], "--steps", 1,
                       "--target", "height"],
    }[case]
    done = run_train(*args, "-o", tmp_path / "run")
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.slow
def test_resume_refuses_another_architecture_and_a_new_run_refuses_an_old_folder(data, tmp_path):
    output = tmp_path / "run"
    assert run_train(*fresh_args(data, 28, 1), "-o", output).returncode == 0
    again = run_train(*fresh_args(data, 28, 1), "-o", output)
    assert again.returncode == 2 and "--resume" in again.stderr
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(ARCH.read_text())["config"], "fusion": 16}))
    refused = run_train(data["train"], "--resume", output, "--arch", other, "--steps", 2)
    assert refused.returncode == 2 and "another architecture" in refused.stderr and "fusion 32→16" in refused.stderr
    flipped = run_train(data["train"], "--resume", output, "--target", "disparity", "--steps", 2)
    assert flipped.returncode == 2 and "output depth→disparity" in flipped.stderr


def run_in_process(args: list[object], monkeypatch, capsys) -> tuple[int, str]:
    from anydepth_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["anydepth", "train", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    from anydepth_cli.training import loop

    calls = {"n": 0}
    real = loop.depth_loss

    def failing(pred, target, valid):
        calls["n"] += 1
        terms = real(pred, target, valid)
        return terms if calls["n"] <= 2 else type(terms)(terms.total * math.nan, terms.ssi, terms.gradient)

    monkeypatch.setattr(loop, "depth_loss", failing)
    output = tmp_path / "run"
    code, err = run_in_process(fresh_args(data, 28, 5, "--batch-size", 4, "--save-every", 2) + ["-o", output],
                               monkeypatch, capsys)
    assert code == 1 and "non-finite at step 3" in err and "step 2" in err
    assert torch.load(output / "last.pth", weights_only=True)["step"] == 2
    load_network(NetworkConfig.from_file(output / "arch.json"), output / "model.pth")


def test_out_of_memory_is_one_line(data, tmp_path, monkeypatch, capsys):
    from anydepth_cli.training import loop

    def out_of_memory(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(loop, "depth_loss", out_of_memory)
    code, err = run_in_process(fresh_args(data, 28, 2) + ["-o", tmp_path / "run"], monkeypatch, capsys)
    assert code == 1 and "out of memory" in err and "--batch-size" in err
    assert "Traceback" not in err and "20.00 GiB" not in err
