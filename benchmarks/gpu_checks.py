"""The speed checks of issue 28 in one command, for a machine with a CUDA GPU (a benchmark; nothing to download).

    PYTHONPATH=. python benchmarks/gpu_checks.py -o gpu-checks              # every check, under 6 min on an H100/H200
    PYTHONPATH=. python benchmarks/gpu_checks.py -o gpu-checks --only bench,graphs
    PYTHONPATH=. python benchmarks/gpu_checks.py -o /tmp/q --device cpu --quick   # tiny sizes: the script itself, on a CPU

Each check has a time budget; one that overruns it reports `{"error": "timed out after N s"}`, and one that fails
reports its error: neither stops the others. OUTPUT/summary.json is rewritten after every check, at the end and on
Ctrl+C (exit 130). Inputs (photos, a clip, image/depth pairs, a toy training set, a random checkpoint of the default
model's architecture) are written under OUTPUT/inputs by this script.

- bench: `anydepth bench -r 256 -r 512 -r 1024 --heads sdt,dpt --json` on the paper's DINOv3 ViT-L/16, at batch 1
  (p50/p95 latency, capture seconds) and again at `--batch-size 8` (throughput); goals: SDT p50 ≤ 4/8/20 ms at
  256/512/1024, and DPT/SDT p50 ≥ 1.05 at every size.
- predict: `anydepth predict` of 500 640×480 JPEGs to coloured PNGs, then the same with `--raw npy`: images/s from the
  run's own summary, and the GPU's busy share (nvidia-smi every 100 ms); goals ≥ 300 images/s, busy ≥ 80 %.
- video: `anydepth predict` of a 1280×720 clip of 600 frames (written with OpenCV's mp4v) to H.264, or to mp4v where
  PyAV is missing (the codec is reported): frames/s end to end; goal ≥ 120.
- eval: `anydepth eval` on 200 image/ + depth/ pairs: images/s over the whole command (start-up included).
- train: `anydepth train` on `tools/make_toy_dataset.py`'s set with the tiny fixture architecture: steps/s.
- graphs: on every fixture, `DepthPredictor(graphs=True)` against `graphs=False` on the same input: the largest
  difference over the eager output's range; goals ≤ 1e-3 in bf16 and ≤ 1e-5 in fp32. Without CUDA there are no graphs:
  the check then runs eager against eager and judges no goal.

`--quick` shrinks every input (fixture networks, 8 photos, a 16-frame 128×96 clip, 2 training steps) so that the whole
script runs on a CPU in a minute or two; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures_dir import fixtures_dir  # noqa: E402

from anydepth_cli.bench.weights import output_difference, vary_weights  # noqa: E402
from anydepth_cli.evaluation.sanity import sample_photo  # noqa: E402
from anydepth_cli.inference.predictor import DepthPredictor  # noqa: E402
from anydepth_cli.io.encoders import resolve_codec  # noqa: E402
from anydepth_cli.models.config import NetworkConfig  # noqa: E402
from anydepth_cli.models.network import build_network  # noqa: E402
from anydepth_cli.models.registry import DEFAULT_MODEL, get_model  # noqa: E402
from anydepth_cli.weights.checkpoint import LAYOUT_PREFIXES, load_network  # noqa: E402

SDT_GOAL_MS = {256: 4.0, 512: 8.0, 1024: 20.0}
DPT_OVER_SDT = 1.05
IMAGES_PER_S = 300.0
BUSY_SHARE = 0.8
FRAMES_PER_S = 120.0
GRAPH_TOLERANCE = {"bf16": 1e-3, "fp32": 1e-5}
QUICK_NETWORK = "tiny_dinov3_sdt"
"""The fixture that stands in for the default model in --quick (its outputs vary on photos)."""
TRAIN_NETWORK = "tiny_dav2_sdt"
"""The fixture architecture the README's toy training example uses (its encoder is the toy set's encoder.pth)."""


@dataclass(frozen=True)
class Plan:
    """Input sizes and time budgets (seconds) of a run."""

    resolutions: tuple[int, ...]
    bench_runs: tuple[str, ...]
    """Extra `anydepth bench` options at batch 1 (timed forwards and warm-up)."""
    batch8_runs: tuple[str, ...]
    """The same at batch 8."""
    photos: int
    frames: int
    frame_size: tuple[int, int]
    pairs: int
    train_steps: int
    budgets: dict[str, float]
    input_size: int | None = None
    """`--input-size` of predict and eval (None: the model's own)."""


FULL = Plan((256, 512, 1024), (), ("--runs", "20", "--warmup", "3"), 500, 600, (1280, 720), 200, 40,
            {"bench": 115, "predict": 75, "video": 60, "eval": 30, "train": 30, "graphs": 30})
QUICK = Plan((32, 64), ("--runs", "3", "--warmup", "1"), ("--runs", "3", "--warmup", "1"), 8, 16, (128, 96), 8, 2,
             {"bench": 300, "predict": 120, "video": 120, "eval": 120, "train": 120, "graphs": 120}, input_size=64)


class CheckTimeout(Exception):
    """A check ran past its budget."""


class Context:
    """What a check needs: its folder, the device and precision, the plan, shared inputs and its deadline; and
    `result`, which a check fills as its figures come, so that they outlive a later timeout or error."""

    def __init__(self, output: Path, name: str, device: str, precision: str, quick: bool) -> None:
        self.folder = output / name
        self.inputs = output / "inputs"
        self.device = device
        self.precision = precision
        self.quick = quick
        self.plan = QUICK if quick else FULL
        self.budget = self.plan.budgets[name]
        self.deadline = time.monotonic() + self.budget
        self.result: dict[str, Any] = {}
        self.folder.mkdir(parents=True, exist_ok=True)

    def remaining(self) -> float:
        """Seconds left of the check's budget; CheckTimeout when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CheckTimeout(f"timed out after {self.budget:g} s")
        return left

    def cli(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """`python -m anydepth_cli ARGS` as a user runs it, within the check's budget (and `timeout`)."""
        return run([sys.executable, "-m", "anydepth_cli", *args], min(timeout or self.remaining(), self.remaining()),
                   f"anydepth {args[0]}")

    def attempt(self, label: str, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess | None:
        """`cli(ARGS)`, or None when it failed or timed out, with what went wrong put in `result[label]`: one run
        of a check that fails leaves the next its chance."""
        try:
            done = self.cli(*args, timeout=timeout)
        except CheckTimeout as exc:
            self.result[label] = {"error": str(exc)}
            return None
        if failure(done):
            self.result[label] = failure(done)
            return None
        return done


def run(command: Sequence[str], timeout: float, label: str) -> subprocess.CompletedProcess:
    """Run `command` in its own process group, killed with everything it started after `timeout` seconds (then
    CheckTimeout naming `label`) or when this script is interrupted."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]  # this checkout's package, installed or not
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env=os.environ | {"PYTHONPATH": os.pathsep.join(paths)}, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):  # it may have ended just before
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise CheckTimeout(f"timed out after {timeout:.0f} s ({label})") from None
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def failure(done: subprocess.CompletedProcess) -> dict | None:
    """The error of a command that failed (its exit status and last stderr lines), or None when it succeeded."""
    if done.returncode == 0:
        return None
    return {"error": f"exit {done.returncode}", "stderr": done.stderr.strip().splitlines()[-3:]}


def find(pattern: str, text: str) -> re.Match:
    """The first match of `pattern` in a command's output; ValueError quoting the pattern when there is none."""
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"no {pattern!r} in the command's output")
    return match


# ------------------------------------------------------------------------------------------------------------ inputs


@contextlib.contextmanager
def filled_once(folder: Path) -> Iterator[Path]:
    """An empty `folder.partial` to fill, renamed to `folder` once the block ends without an error."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    partial.rename(folder)


def photos(context: Context) -> Path:
    """The plan's 640×480 JPEG crops of the sample photo, enlarged at random, every other one mirrored (written once)."""
    folder = context.inputs / f"photos_{context.plan.photos}"
    if folder.is_dir():
        return folder
    photo = Image.open(sample_photo()).convert("RGB")
    rng = np.random.default_rng(0)
    base = max(640 / photo.width, 480 / photo.height)
    scaled = [photo.resize((round(photo.width * s), round(photo.height * s)), Image.Resampling.BICUBIC)
              for s in base * np.linspace(1.0, 1.5, 6)]
    with filled_once(folder) as partial:
        for index in range(context.plan.photos):
            big = scaled[index % len(scaled)]
            left, top = int(rng.integers(0, big.width - 639)), int(rng.integers(0, big.height - 479))
            crop = big.crop((left, top, left + 640, top + 480))
            if index % 2:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            crop.save(partial / f"photo_{index:03d}.jpg", quality=90)
    return folder


def model(context: Context) -> tuple[Path, Path]:
    """Checkpoint and architecture file to predict with: the default model's architecture with varied random weights
    (written once), or in --quick a fixture network."""
    if context.quick:
        return fixtures_dir() / f"{QUICK_NETWORK}.pth", fixtures_dir() / f"{QUICK_NETWORK}.json"
    folder = context.inputs / "model"
    weights, arch = folder / "weights.pth", folder / "arch.json"
    if weights.is_file():
        return weights, arch
    config = get_model(DEFAULT_MODEL).config
    torch.manual_seed(0)
    network = vary_weights(build_network(config))
    encoder, head = LAYOUT_PREFIXES[config.layout]
    state = {(encoder if key.startswith("encoder.") else head) + key.split(".", 1)[1]: value
             for key, value in network.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    arch.write_text(json.dumps(config.to_dict()))
    torch.save(state, folder / "weights.partial")
    (folder / "weights.partial").rename(weights)
    return weights, arch


def model_options(context: Context) -> list[str]:
    """The options of predict and eval that choose the model, device, precision and input size."""
    weights, arch = model(context)
    size = ["--input-size", str(context.plan.input_size)] if context.plan.input_size else []
    return ["--checkpoint", str(weights), "--arch", str(arch), "--device", context.device,
            "--precision", context.precision, *size]


def clip(context: Context) -> Path:
    """The plan's clip (mp4v, 30 fps): a window panning across the enlarged sample photo (written once)."""
    import cv2

    width, height = context.plan.frame_size
    path = context.inputs / f"clip_{width}x{height}_{context.plan.frames}.mp4"
    if path.is_file():
        return path
    photo = Image.open(sample_photo()).convert("RGB")
    scale = 1.5 * max(width / photo.width, height / photo.height)
    big = np.asarray(photo.resize((round(photo.width * scale), round(photo.height * scale)),
                                  Image.Resampling.BICUBIC))[..., ::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name("partial_" + path.name)
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v here")
    for index in range(context.plan.frames):
        phase = index / max(context.plan.frames - 1, 1)
        left = round(phase * (big.shape[1] - width))
        top = round(phase * (big.shape[0] - height))
        writer.write(np.ascontiguousarray(big[top: top + height, left: left + width]))
    writer.release()
    partial.rename(path)
    return path


def pairs(context: Context) -> Path:
    """image/NNN.jpg + depth/NNN.npy pairs: the first photos, each with a smooth depth map (written once)."""
    folder = context.inputs / f"pairs_{context.plan.pairs}"
    if folder.is_dir():
        return folder
    rows, columns = np.mgrid[0:480, 0:640].astype(np.float32)
    with filled_once(folder) as partial:
        (partial / "image").mkdir()
        (partial / "depth").mkdir()
        for index, photo in enumerate(sorted(photos(context).glob("*.jpg"))[: context.plan.pairs]):
            shutil.copyfile(photo, partial / "image" / f"{index:03d}.jpg")
            depth = 1 + 4 * (1 - rows / 480) + np.sin(columns / 80 + index)
            np.save(partial / "depth" / f"{index:03d}.npy", depth.astype(np.float32))
    return folder


# ------------------------------------------------------------------------------------------------------------ checks


def check_bench(context: Context) -> None:
    """SDT and the paper's DPT at each size: p50/p95 at batch 1, capture seconds, and throughput at batch 8."""
    sizes = [option for r in context.plan.resolutions for option in ("-r", str(r))]
    model_option = ["--arch", str(fixtures_dir() / f"{QUICK_NETWORK}.json")] if context.quick else []
    common = ["bench", *sizes, "--heads", "sdt,dpt", "--device", context.device, "--precision", context.precision,
              "--json", *model_option]
    result = context.result
    batch1 = context.attempt("batch1", *common, *context.plan.bench_runs, "-o", str(context.folder / "batch1"),
                             timeout=0.6 * context.budget)
    if batch1 is not None:
        report = json.loads(batch1.stdout)
        latency = {(m["head"], m["resolution"]): m for m in report["measurements"]}
        ratios = {r: latency["dpt", r]["latency"]["p50_ms"] / latency["sdt", r]["latency"]["p50_ms"]
                  for r in context.plan.resolutions}
        result.update(precision=report["settings"]["precision"], gpu=report["machine"].get("gpu"),
                      p50_ms={f"{h} {r}": round(m["latency"]["p50_ms"], 3) for (h, r), m in latency.items()},
                      p95_ms={f"{h} {r}": round(m["latency"]["p95_ms"], 3) for (h, r), m in latency.items()},
                      capture_seconds={f"{h} {r}": round(m["capture_seconds"], 2) for (h, r), m in latency.items()},
                      dpt_over_sdt={str(r): round(v, 3) for r, v in ratios.items()})
        goals = {f"sdt_{r}_p50_le_{SDT_GOAL_MS[r]:g}ms": latency["sdt", r]["latency"]["p50_ms"] <= SDT_GOAL_MS[r]
                 for r in context.plan.resolutions if r in SDT_GOAL_MS}
        goals[f"dpt_over_sdt_ge_{DPT_OVER_SDT}_at_every_size"] = min(ratios.values()) >= DPT_OVER_SDT
        result["goals"] = goals
    batch8 = context.attempt("batch8", *common, *context.plan.batch8_runs, "--batch-size", "8",
                             "-o", str(context.folder / "batch8"))
    if batch8 is None:
        return
    measurements = json.loads(batch8.stdout)["measurements"]
    result["batch8_images_per_s"] = {f"{m['head']} {m['resolution']}": round(m["throughput_images_per_s"], 1)
                                     for m in measurements}
    result["batch8_p50_ms"] = {f"{m['head']} {m['resolution']}": round(m["batch_latency"]["p50_ms"], 3)
                               for m in measurements}


class GpuSampler:
    """GPU utilisation (%) sampled by nvidia-smi every 100 ms while entered (no samples without nvidia-smi)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        if shutil.which("nvidia-smi"):
            self._process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                              "-lms", "100", "-i", "0"], stdout=subprocess.PIPE, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def busy_share(self) -> float | None:
        """Mean utilisation from the first sample with work to the last (loading and exiting left out), or None."""
        busy = [i for i, sample in enumerate(self.samples) if sample > 0]
        if not busy:
            return None
        return statistics.fmean(self.samples[busy[0]: busy[-1] + 1]) / 100


def check_predict(context: Context) -> None:
    """Images/s of `anydepth predict` on the photos to coloured PNGs, then also with `--raw npy`, and the busy share."""
    folder = photos(context)
    result = context.result
    result.update(photos=context.plan.photos, goals={},
                  note="seconds: the run's own summary line; busy share: mean nvidia-smi utilisation from the first "
                       "sample with work to the last")
    for label, extra, share_of_left in (("png", [], 0.5), ("png_and_npy", ["--raw", "npy"], 1.0)):
        with GpuSampler() as sampler:
            done = context.attempt(label, "predict", str(folder), "-o", str(context.folder / label),
                                   *model_options(context), *extra, timeout=share_of_left * context.remaining())
        if done is None:
            continue
        written = int(find(r"written\s+(\d+) image", done.stderr).group(1))
        seconds = float(find(r"time\s+([\d.]+) s", done.stderr).group(1))
        share = sampler.busy_share()
        result[label] = {"written": written, "seconds": seconds, "images_per_s": round(written / seconds, 1),
                         "gpu_busy_share": None if share is None else round(share, 3)}
        result["goals"][f"{label}_images_per_s_ge_{IMAGES_PER_S:g}"] = written / seconds >= IMAGES_PER_S
        result["goals"][f"{label}_busy_share_ge_{BUSY_SHARE:g}"] = None if share is None else share >= BUSY_SHARE


def check_video(context: Context) -> None:
    """Frames/s of `anydepth predict` on the clip to an H.264 depth video (mp4v where PyAV is missing)."""
    source = clip(context)
    codec, note = resolve_codec("h264")
    context.result.update(codec=codec, codec_note=note)
    done = context.cli("predict", str(source), "-o", str(context.folder / "out"), "--codec", "h264",
                       *model_options(context))
    if failure(done):
        context.result.update(failure(done))
        return
    line = find(r"(\d+) frame\(s\), (\d+x\d+) at [\d.]+ fps.*?, ([\d.]+) frames/s", done.stderr)
    rate = float(line.group(3))
    context.result.update(frames=int(line.group(1)), size=line.group(2), frames_per_s=rate,
                          goals={f"frames_per_s_ge_{FRAMES_PER_S:g}": rate >= FRAMES_PER_S})


def check_eval(context: Context) -> None:
    """Images/s of `anydepth eval` on the image/depth pairs, over the whole command."""
    data = pairs(context)
    started = time.perf_counter()
    done = context.cli("eval", str(data), "-o", str(context.folder / "out"), *model_options(context))
    seconds = time.perf_counter() - started
    if failure(done):
        context.result.update(failure(done))
        return
    context.result.update(pairs=context.plan.pairs, seconds=round(seconds, 2),
                          images_per_s=round(context.plan.pairs / seconds, 1),
                          note="wall time of the whole command: start-up and model loading included")


def check_train(context: Context) -> None:
    """Steps/s of `anydepth train` on the toy set with the tiny fixture architecture (the README's example)."""
    toy = context.inputs / "toy"
    if not (toy / "encoder.pth").is_file():
        shutil.rmtree(toy, ignore_errors=True)
        made = run([sys.executable, str(REPO / "tools" / "make_toy_dataset.py"), str(toy), "--fixtures",
                    str(fixtures_dir())], context.remaining(), "make_toy_dataset.py")
        if failure(made):
            context.result["toy_dataset"] = failure(made)
            return
    done = context.cli("train", str(toy / "train"), "-o", str(context.folder / "run"), "--arch",
                       str(fixtures_dir() / f"{TRAIN_NETWORK}.json"), "--encoder-weights", str(toy / "encoder.pth"),
                       "--input-size", "56", "--steps", str(context.plan.train_steps), "--lr", "1e-3",
                       "--device", context.device, "--precision", context.precision)
    if failure(done):
        context.result.update(failure(done))
        return
    steps = int(find(r"trained\s+(\d+) of", done.stderr).group(1))
    seconds, images = (float(v) for v in find(r"time\s+([\d.]+) s \(([\d.]+) img/s\)", done.stderr).groups())
    context.result.update(steps=steps, seconds=seconds, steps_per_s=round(steps / seconds, 2), images_per_s=images,
                          precision=context.precision)


def check_graphs(context: Context) -> None:
    """Graphed against eager forwards of every fixture in bf16 and fp32: largest difference over the output range."""
    device = torch.device(context.device)
    graphed = device.type == "cuda"
    worst: dict[str, dict[str, float]] = {"bf16": {}, "fp32": {}}
    context.result.update(graphed=graphed, max_difference_over_range=worst)
    for path in sorted(fixtures_dir().glob("*.json")):
        context.remaining()
        meta = json.loads(path.read_text())
        network = load_network(NetworkConfig.from_file(path), path.parent / meta["checkpoint"], device)
        arrays = np.load(path.parent / meta["arrays"])
        for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            eager = DepthPredictor(network, device=device, dtype=dtype, graphs=False)
            replayed = DepthPredictor(network, device=device, dtype=dtype, graphs=graphed)
            for case in meta["cases"]:
                batch = torch.from_numpy(arrays[f"input_{case['index']}"]).float().to(device)
                expected = eager.run(batch).float().clone()
                ours = replayed.run(batch).float().clone()
                ratio = float(f"{output_difference(ours, expected)['max_difference_over_range']:.3g}")
                worst[label][path.stem] = max(worst[label].get(path.stem, 0.0), ratio)
        del network, eager, replayed
        gc.collect()
        if graphed:
            torch.cuda.empty_cache()
    if not worst["fp32"]:
        raise RuntimeError(f"no fixtures in {fixtures_dir()} (set ANYDEPTH_FIXTURES_DIR)")
    if not graphed:
        context.result["note"] = "no CUDA, so no graphs: eager against eager, goals not judged"
        return
    context.result["goals"] = {f"{label}_le_{GRAPH_TOLERANCE[label]:g}": max(by.values()) <= GRAPH_TOLERANCE[label]
                               for label, by in worst.items()}


CHECKS: dict[str, Callable[[Context], None]] = {"bench": check_bench, "predict": check_predict, "video": check_video,
                                                 "eval": check_eval, "train": check_train, "graphs": check_graphs}


# ------------------------------------------------------------------------------------------------------------ summary


def jsonable(value: object) -> object:
    """`value` as JSON data: numpy scalars and arrays, tensors and paths converted; anything else as its str."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    return str(value)


def write_summary(summary: dict, path: Path) -> None:
    """`summary` as JSON at `path`, replaced atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(summary, indent=2, default=jsonable))
    os.replace(partial, path)


def machine(device: str) -> dict:
    """The device, torch and CUDA versions, and whether PyAV (H.264) is here."""
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {"device": device, "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
            "h264_codec": resolve_codec("h264")[0]}


def run_checks(names: list[str], output: Path, device: str, precision: str, quick: bool) -> dict:
    """Run the named checks in order, rewriting OUTPUT/summary.json after each; on Ctrl+C the summary is written
    and KeyboardInterrupt raised again."""
    summary: dict[str, Any] = {"machine": machine(device), "quick": quick, "precision": precision, "checks": {}}
    path = output / "summary.json"
    started = time.perf_counter()
    try:
        for name in names:
            summary["checks"][name] = {"running": True}
            write_summary(summary, path)
            check_started = time.perf_counter()
            context = Context(output, name, device, precision, quick)
            try:
                CHECKS[name](context)
            except CheckTimeout as exc:
                context.result["error"] = str(exc)
            except KeyboardInterrupt:
                summary["checks"][name] = context.result | {"error": "interrupted"}
                raise
            except Exception as exc:  # one failed check must not lose the others' figures
                context.result["error"] = f"{type(exc).__name__}: {exc}"
            summary["checks"][name] = context.result | {"check_seconds": round(time.perf_counter() - check_started, 1)}
            write_summary(summary, path)
            print(json.dumps({name: summary["checks"][name]}, default=jsonable), flush=True)
    except KeyboardInterrupt:
        summary["interrupted"] = True
        raise
    finally:
        summary["seconds"] = round(time.perf_counter() - started, 1)
        summary["goals"] = {f"{name} {goal}": met for name, result in summary["checks"].items()
                            for goal, met in result.get("goals", {}).items()}
        write_summary(summary, path)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("gpu-checks"))
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks: {', '.join(CHECKS)}")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="default: bf16 on CUDA, fp32 on the CPU")
    parser.add_argument("--quick", action="store_true", help="tiny inputs and fixture networks: tries the script out")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown or not names:
        parser.error(f"--only: unknown check(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(CHECKS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: use --device cpu --quick to try the script out")
    precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    try:
        summary = run_checks(names, args.output.resolve(), args.device, precision, args.quick)
    except KeyboardInterrupt:
        print(f"interrupted; summary in {args.output / 'summary.json'}", file=sys.stderr)
        return 130
    print(json.dumps({"goals": summary["goals"], "seconds": summary["seconds"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
