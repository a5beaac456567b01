"""`anydepth train`: the loss, the data order, learning, resume after kill -9, DDP equality and bad input."""

from __future__ import annotations

import copy
import csv
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
import torch.distributed as dist
from PIL import Image
from torch import nn

from anydepth_cli.datasets import generic
from anydepth_cli.datasets.family import open_set
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.evaluation.folder_run import run_eval
from anydepth_cli.inference.precision import select_dtype
from anydepth_cli.inference.predictor import DepthPredictor
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.training.batchnorm import GlobalBatchNorm2d, global_batchnorm
from anydepth_cli.training.data import Mix, epoch_batches
from anydepth_cli.training.distributed import World
from anydepth_cli.training.loop import train
from anydepth_cli.training.loss import depth_loss, masked_quantiles, relu_raising_below
from anydepth_cli.training.options import TrainOptions, training_config
from anydepth_cli.training.report import Reporter
from anydepth_cli.training.start import fresh_network
from anydepth_cli.weights.checkpoint import load_network
from conftest import TINY, cli_env, run_cli, tiny_model_args
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


def reference_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> float:
    """The loss as README states it, one image and one scale at a time, with torch.quantile."""
    losses = []
    for p, t, m in zip(pred, target, valid):
        low, high = torch.quantile(t[m], torch.tensor([0.02, 0.98], dtype=t.dtype))
        r = torch.where(m, p - (t - low) / (high - low), 0.0)
        gradient = 0.0
        for k in range(4):
            rk, mk = r[:: 2 ** k, :: 2 ** k], m[:: 2 ** k, :: 2 ** k]
            dx = (rk[:, 1:] - rk[:, :-1]).abs()[mk[:, 1:] & mk[:, :-1]].sum()
            dy = (rk[1:] - rk[:-1]).abs()[mk[1:] & mk[:-1]].sum()
            gradient += float(dx + dy) / int(mk.sum())
        losses.append(float(r[m].abs().mean()) + 0.5 * gradient)
    return sum(losses) / len(losses)


def test_loss_is_what_the_readme_states():
    torch.manual_seed(0)
    pred, target = torch.rand(3, 20, 18, dtype=torch.float64), torch.rand(3, 20, 18, dtype=torch.float64) * 5 + 1
    valid = torch.rand(3, 20, 18) > 0.3
    assert depth_loss(pred, target, valid).total.item() == pytest.approx(reference_loss(pred, target, valid), rel=1e-9)


def test_masked_quantiles_equal_torch_quantile():
    torch.manual_seed(0)
    values, valid = torch.rand(4, 9, 11, dtype=torch.float64), torch.rand(4, 9, 11) > 0.5
    valid[3] = False
    valid[3, 2, 2] = True  # a single valid value
    ours = masked_quantiles(values, valid, (0.02, 0.5, 0.98))
    for i in range(4):
        expected = torch.quantile(values[i][valid[i]], torch.tensor([0.02, 0.5, 0.98], dtype=torch.float64))
        assert torch.allclose(ours[i], expected, rtol=0, atol=1e-12)


def test_loss_ignores_the_ground_truths_scale_and_shift_but_fixes_the_predictions():
    torch.manual_seed(0)
    target = torch.rand(2, 16, 16, dtype=torch.float64) + 0.5
    valid = torch.rand(2, 16, 16) > 0.2
    pred = torch.rand(2, 16, 16, dtype=torch.float64)
    assert depth_loss(pred, 3.0 * target + 7.0, valid).total.item() == pytest.approx(
        depth_loss(pred, target, valid).total.item(), rel=1e-9)
    flat = [t[m] for t, m in zip(target, valid)]
    low = torch.stack([torch.quantile(f, 0.02) for f in flat])[:, None, None]
    high = torch.stack([torch.quantile(f, 0.98) for f in flat])[:, None, None]
    normalised = (target - low) / (high - low)
    assert depth_loss(normalised, target, valid).total.item() == pytest.approx(0.0, abs=1e-9)
    best = depth_loss(normalised, target, valid).total.item()
    inverted = depth_loss(1.0 - normalised, target, valid).total.item()
    shrunk = depth_loss(1.0 + 0.01 * normalised, target, valid).total.item()  # the right order, no spread
    assert inverted > 0.3 and shrunk > 0.3 and best < 1e-9


def test_an_image_without_spread_or_valid_pixels_counts_zero():
    pred, target = torch.rand(3, 8, 8, dtype=torch.float64), torch.rand(3, 8, 8, dtype=torch.float64) + 1
    valid = torch.ones(3, 8, 8, dtype=torch.bool)
    target[1] = 2.0
    valid[2] = False
    terms = depth_loss(pred, target, valid)
    alone = depth_loss(pred[:1], target[:1], valid[:1])
    assert terms.total.item() == pytest.approx(alone.total.item() / 3, rel=1e-12)


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


# ----------------------------------------------------------------------------------------- batchnorm


def test_global_batchnorm_is_batchnorm_in_one_process(tmp_path):
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0)
        plain.bias.uniform_(-1.0, 1.0)
    ours = global_batchnorm(nn.Sequential(copy.deepcopy(plain)))[0]
    assert type(ours) is GlobalBatchNorm2d and ours.state_dict().keys() == plain.state_dict().keys()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for _ in range(3):
            x = (torch.randn(4, 3, 5, 6, dtype=torch.float64) * 3 + 2).requires_grad_()
            upstream = torch.randn(4, 3, 5, 6, dtype=torch.float64)
            grads = []
            for norm in (plain, ours):
                out = norm(x)
                x.grad = None
                out.backward(upstream)
                grads.append((out.detach(), x.grad.clone(), norm.weight.grad.clone(), norm.bias.grad.clone()))
            for a, b in zip(*grads):
                assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    finally:
        dist.destroy_process_group()
    for key, value in plain.state_dict().items():
        assert torch.allclose(value.double(), ours.state_dict()[key].double(), rtol=1e-12, atol=0), key
    assert not torch.allclose(ours.running_var, torch.ones(3, dtype=torch.float64))
    ours.eval(), plain.eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert torch.allclose(ours(x), plain(x), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------ learning


def held_out(network: DepthNetwork, val: Path, precision: str = "fp32") -> tuple[float, list[float], float]:
    """Held-out mean AbsRel and per-image scales as `anydepth eval` computes them at 56 px, and the output's
    spread (2nd to 98th percentile) over its mean, averaged over the images."""
    pairs = open_set(generic.family(), val)
    predictor = DepthPredictor(network, 56, torch.device("cpu"), select_dtype(precision, torch.device("cpu")), 4)
    result = run_eval(pairs, {"model": predictor}, get_preset("default"), batch_size=4)
    maps = predictor.predict_batch([pairs.reader.rgb(sample) for sample in pairs.samples])
    spread = float(np.mean([np.ptp(np.percentile(m, [2, 98])) / m.mean() for m in maps]))
    return result.aggregates["model"]["abs_rel"], [float(row["scale"]) for row in result.rows], spread


def eval_rows(folder: Path, val: Path, output: Path, *extra: object) -> list[dict[str, str]]:
    """`anydepth eval`'s per-image rows for the run in `folder`."""
    evaluated = run_cli("eval", val, "--checkpoint", folder / "model.pth", "--arch", folder / "arch.json",
                        "--input-size", 56, "-o", output, *extra)
    assert evaluated.returncode == 0, evaluated.stderr
    with open(output / "eval_per_image.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_the_readme_toy_model_learns_depth_the_right_way_round(data, tmp_path):
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

    untrained, _, _ = held_out(fresh_network(training_config(NetworkConfig.from_file(ARCH), "depth"), data["encoder"],
                                             seed=0), data["val"])
    fp32 = eval_rows(output, data["val"], tmp_path / "eval-fp32", "--precision", "fp32")
    bf16 = eval_rows(output, data["val"], tmp_path / "eval-bf16", "--precision", "bf16")
    abs_rel = {name: np.mean([float(row["abs_rel"]) for row in rows]) for name, rows in (("fp32", fp32), ("bf16", bf16))}
    scales = [float(row["scale"]) for row in fp32]
    print(f"held-out AbsRel: untrained {untrained:.4f}, trained {abs_rel['fp32']:.4f} (bf16 {abs_rel['bf16']:.4f}); "
          f"scales {min(scales):.3g}…{max(scales):.3g}")
    assert abs_rel["fp32"] <= 0.6 * untrained
    assert min(scales) > 0  # the output grows with depth on every held-out image, as arch.json declares
    assert abs(abs_rel["bf16"] - abs_rel["fp32"]) <= 0.02 * abs_rel["fp32"]

    pictures = tmp_path / "pictures"
    predicted = run_cli("predict", data["val"] / "image", "-o", pictures, "--checkpoint", output / "model.pth",
                        "--arch", output / "arch.json", "--input-size", 56, "--raw", "npy")
    assert predicted.returncode == 0, predicted.stderr
    for depth_file in sorted((data["val"] / "depth").glob("*.npy")):
        depth = np.load(depth_file)
        brightness = np.asarray(Image.open(pictures / f"{depth_file.stem}_depth.png").convert("L"), dtype=np.float64)
        raw = np.load(pictures / f"{depth_file.stem}_depth.npy")
        r = np.corrcoef(brightness.ravel(), depth.ravel())[0, 1]
        print(f"{depth_file.stem}: brightness vs depth r = {r:.3f}, output {raw.min():.3f}…{raw.max():.3f}")
        assert r < -0.8  # near bright, far dark
        assert np.ptp(np.percentile(raw, [2, 98])) >= 0.5 * raw.mean()  # the depth is not a ripple on a constant


SWEEP = [  # (fixture network, fresh head or its checkpoint, target, peak lr, seed, steps)
    ("tiny_dinov3_sdt", "fresh", "depth", 1e-3, 1, 60),
    ("tiny_dinov3_sdt", "fresh", "disparity", 3e-4, 0, 60),
    ("tiny_dav2_sdt", "fresh", "disparity", 3e-4, 2, 60),
    ("tiny_dinov3_sdt", "checkpoint", "depth", 1e-3, 0, 60),  # re-anchoring outputs of 0…5 at a high lr, without dying
    ("tiny_dav2_sdt", "fresh", "depth", 1e-4, 0, 150),  # the lowest lr, over the shortest schedule
    ("tiny_dinov3_sdt", "fresh", "depth", 1e-3, 0, 400),  # the set-up whose loss a longer schedule once lost
]


@pytest.fixture(scope="module")
def encoders(data) -> dict[str, Path]:
    folder = data["encoder"].parent
    return {name: save_fixture_encoder(folder / f"{name}-encoder.pth", fixtures_dir(), name)
            for name in {fixture for fixture, *_ in SWEEP}}


@pytest.fixture
def one_thread():
    """One torch thread while the test trains in this process, as `train_env` gives the training children."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("fixture, start, target, lr, seed, steps", SWEEP)
def test_a_head_learns_its_target_the_right_way_round(fixture, start, target, lr, seed, steps, data, encoders, tmp_path,
                                                      one_thread):
    arch = fixtures_dir() / f"{fixture}.json"
    config = training_config(NetworkConfig.from_file(arch), target)
    if start == "fresh":
        origin = {"encoder_weights": encoders[fixture]}
        untrained, _, _ = held_out(fresh_network(config, encoders[fixture], seed), data["val"])
    else:
        origin = {"checkpoint": str(fixtures_dir() / f"{fixture}.pth")}
        untrained, _, _ = held_out(load_network(config, fixtures_dir() / f"{fixture}.pth"), data["val"])
    options = TrainOptions(data=(data["train"],), output=tmp_path, arch=arch, target=target, steps=steps, lr=lr,
                           seed=seed, input_size=56, workers=0, save_every=10 ** 9, **origin)
    train(options, Reporter())
    trained = load_network(NetworkConfig.from_file(tmp_path / "arch.json"), tmp_path / "model.pth")
    abs_rel, scales, spread = held_out(trained, data["val"])
    abs_rel_bf16, _, _ = held_out(trained, data["val"], "bf16")
    print(f"{fixture} {start} {target} lr {lr} seed {seed} {steps} steps: held-out AbsRel {untrained:.4f} → {abs_rel:.4f} "
          f"(bf16 {abs_rel_bf16:.4f}), scales {min(scales):.3g}…{max(scales):.3g}, spread/mean {spread:.2f}")
    assert abs_rel <= 0.75 * untrained
    assert min(scales) > 0  # the output runs the way arch.json declares on every held-out image
    assert spread >= 0.5
    assert abs(abs_rel_bf16 - abs_rel) <= 0.02 * abs_rel


def test_the_trained_relu_passes_only_the_gradient_that_raises_a_clipped_output():
    raw = torch.tensor([-2.0, -1.0, 0.5, 2.0], requires_grad=True)
    out = relu_raising_below(raw, 0.001)
    assert torch.equal(out, torch.relu(raw.detach()) + 0.001)
    out.backward(torch.tensor([-1.0, 1.0, 1.0, -1.0]))  # descending -1 raises the output, +1 lowers it
    assert raw.grad.tolist() == [-1.0, 0.0, 1.0, -1.0]


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
@pytest.mark.parametrize("batchnorm", ["train", "frozen"])
def test_two_torchrun_processes_give_the_weights_of_one(batchnorm, data, tmp_path):
    args = fresh_args(data, 28, 6, "--save-every", 3, "--precision", "fp64", "--batchnorm", batchnorm)
    single = run_train(*args, "--batch-size", 4, "-o", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *train_cmd(*args, "--batch-size", 2, "-o", tmp_path / "two")[1:]],
                         capture_output=True, text=True, env=train_env(), timeout=150,
                         preexec_fn=limit_memory)
    assert two.returncode == 0, two.stderr
    assert two.stderr.count("trained ") == 1  # only rank 0 prints
    difference = max_difference(tmp_path / "one" / "model.pth", tmp_path / "two" / "model.pth")
    print(f"--batchnorm {batchnorm}, 1 process × batch 4 vs 2 processes × batch 2: max |Δw| = {difference:.3g}")
    assert difference <= 1e-5
    state = torch.load(tmp_path / "two" / "model.pth", weights_only=True)
    running = [state[k] for k in state if k.endswith(("running_mean", "running_var"))]
    fresh = [torch.equal(v, torch.zeros_like(v)) or torch.equal(v, torch.ones_like(v)) for v in running]
    assert running and (not any(fresh) if batchnorm == "train" else all(fresh))


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
    ("bad-target", "--target must be depth, disparity or metric"),
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
        return terms if calls["n"] <= 2 else type(terms)(terms.total * math.nan, terms.regression, terms.gradient)

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


def test_a_dead_start_stops_before_the_first_step_and_writes_nothing(data, tmp_path, monkeypatch, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "model.pth").write_bytes(b"a good model")
    args = [data["train"], *tiny_model_args(), "--input-size", 56, "--steps", 20, "--workers", 0, "-o", output]
    code, err = run_in_process(args, monkeypatch, capsys)
    errors = [line for line in err.splitlines() if "error" in line]
    assert code == 1 and len(errors) == 1, err
    assert "dead start" in errors[0] and "activation floor" in errors[0] and "--encoder-weights" in errors[0]
    assert "--target" in errors[0] and "nothing written" in errors[0]
    assert sorted(p.name for p in output.iterdir()) == ["model.pth"]
    assert (output / "model.pth").read_bytes() == b"a good model"
