"""The GPU checks of the speed work in one go, for a machine with a CUDA GPU (a benchmark; it needs no download).

    python benchmarks/gpu_checks.py -o gpu-checks              # all four checks, ~5 min on an H100/H200
    python benchmarks/gpu_checks.py -o gpu-checks --only bench,parity

Needs a CUDA build of torch with this package installed (`pip install -e ".[test]"`), and for the last check
onnxruntime-gpu. Each check writes its own files under OUTPUT and one line into OUTPUT/summary.json:

- bench: `anydepth bench -r 256 -r 512 -r 1024 --device cuda` (bf16 autocast where the GPU has it), the paper's
  DINOv3 ViT-L/16 with SDT and DPT; goals: SDT at 1024² ≤ 25 ms, and SDT faster than DPT at every size.
- predict: `anydepth predict` on a folder of 200 photos (640×480 crops of the Grace Hopper photo) at 518² with
  the default model's architecture (random weights in a checkpoint written here): images/s, and the GPU's busy
  share of the run's wall time sampled by nvidia-smi every 100 ms (goal ≥ 80 %: reading and writing overlap the
  network).
- parity: bf16 autocast against fp32 on every parity fixture (raw head outputs): largest difference relative
  to the output's range and to its largest magnitude; goal ≤ 1e-2. (On the CPU, bf16 autocast gives 2–14 % of
  the range on these random networks: their outputs are small differences of large activations.)
- backends: `benchmarks/backends.py --device cuda`, ONNX Runtime's CUDA provider against PyTorch.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures_dir import fixtures_dir  # noqa: E402

from anydepth_cli.bench.weights import output_difference, vary_weights  # noqa: E402
from anydepth_cli.evaluation.sanity import sample_photo  # noqa: E402
from anydepth_cli.models.config import NetworkConfig  # noqa: E402
from anydepth_cli.models.network import build_network  # noqa: E402
from anydepth_cli.models.registry import DEFAULT_MODEL, get_model  # noqa: E402
from anydepth_cli.weights.checkpoint import LAYOUT_PREFIXES, load_network  # noqa: E402

PHOTOS = 200
SDT_1024_MS = 25.0
BUSY_SHARE = 0.8
BF16_RELATIVE = 1e-2


def cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`python -m anydepth_cli ARGS`, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "anydepth_cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def check_bench(folder: Path) -> dict:
    """SDT and the paper's DPT at 256², 512², 1024² on the GPU: p50 latencies, SDT's 1024² latency goal."""
    done = cli("bench", "-r", "256", "-r", "512", "-r", "1024", "--device", "cuda", "-o", str(folder), "--json")
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    report = json.loads(done.stdout)
    p50 = {(m["head"], m["resolution"]): m["latency"]["p50_ms"] for m in report["measurements"]}
    mean = {(m["head"], m["resolution"]): m["latency"]["mean_ms"] for m in report["measurements"]}
    sizes = sorted({r for _, r in p50})
    return {"precision": report["settings"]["precision"], "gpu": report["machine"].get("gpu"),
            "p50_ms": {f"{head} {r}": round(v, 2) for (head, r), v in p50.items()},
            "sdt_1024_mean_ms": round(mean[("sdt", 1024)], 2),
            "sdt_1024_goal_met": mean[("sdt", 1024)] <= SDT_1024_MS,
            "sdt_faster_than_dpt_at_every_size": all(p50[("sdt", r)] < p50[("dpt", r)] for r in sizes)}


def write_photos(folder: Path, count: int) -> Path:
    """`count` 640×480 JPEG crops (every other one mirrored) of the sample photo, enlarged at random."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(sample_photo()).convert("RGB")
    rng = np.random.default_rng(0)
    for index in range(count):
        scale = max(640 / photo.width, 480 / photo.height) * rng.uniform(1.0, 1.5)
        big = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
        left, top = int(rng.integers(0, big.width - 639)), int(rng.integers(0, big.height - 479))
        crop = big.crop((left, top, left + 640, top + 480))
        if index % 2:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"photo_{index:03d}.jpg", quality=90)
    return folder


def random_checkpoint(folder: Path, name: str = DEFAULT_MODEL) -> tuple[Path, Path]:
    """A checkpoint of the registry model's architecture with varied random weights, and its arch file."""
    config = get_model(name).config
    torch.manual_seed(0)
    network = vary_weights(build_network(config))
    encoder, head = LAYOUT_PREFIXES[config.layout]
    state = {(encoder if key.startswith("encoder.") else head) + key.split(".", 1)[1]: value
             for key, value in network.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "weights.pth")
    (folder / "arch.json").write_text(json.dumps(config.to_dict()))
    return folder / "weights.pth", folder / "arch.json"


class GpuSampler:
    """GPU utilisation (%) sampled by nvidia-smi every 100 ms while entered."""

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


def check_predict(folder: Path, device: str = "cuda", count: int = PHOTOS) -> dict:
    """Images/s of `anydepth predict` on `count` photos at 518² on the GPU, and the GPU's busy share."""
    photos = write_photos(folder / "photos", count)
    weights, arch = random_checkpoint(folder / "model")
    with GpuSampler() as sampler:
        done = cli("predict", str(photos), "-o", str(folder / "out"), "--checkpoint", str(weights), "--arch",
                   str(arch), "--device", device)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    seconds = float(re.search(r"time\s+([\d.]+) s", done.stderr).group(1))
    busy = [s for s in sampler.samples if s > 0]
    share = statistics.fmean(busy) / 100 if busy else None
    return {"photos": count, "seconds": seconds, "images_per_s": round(count / seconds, 2),
            "gpu_busy_share_while_working": None if share is None else round(share, 3),
            "busy_share_goal_met": None if share is None else share >= BUSY_SHARE,
            "note": "busy share: mean nvidia-smi utilization over the samples after the GPU first got work"}


def check_parity(folder: Path, device: str = "cuda") -> dict:
    """bf16 autocast against fp32 on each fixture's cases (raw outputs), relative to the output's range."""
    results = {}
    for path in sorted(fixtures_dir().glob("*.json")):
        meta = json.loads(path.read_text())
        network = load_network(NetworkConfig.from_file(path), path.parent / meta["checkpoint"], device)
        arrays = np.load(path.parent / meta["arrays"])
        worst = np.zeros(2)
        for case in meta["cases"]:
            image = torch.from_numpy(arrays[f"input_{case['index']}"]).float().to(device)
            with torch.inference_mode():
                exact = network.raw(image)
                with torch.autocast(device, dtype=torch.bfloat16):
                    fast = network.raw(image)
            difference = output_difference(fast, exact)
            magnitude = max(abs(difference["output_min"]), abs(difference["output_max"]))
            worst = np.maximum(worst, [difference["max_difference_over_range"],
                                       difference["max_abs_difference"] / magnitude])
        results[path.stem] = worst
    if not results:
        return {"error": f"no fixtures in {fixtures_dir()} (set ANYDEPTH_FIXTURES_DIR)"}
    return {"max_difference_over_range": {k: float(f"{v[0]:.3g}") for k, v in results.items()},
            "max_difference_over_largest_magnitude": {k: float(f"{v[1]:.3g}") for k, v in results.items()},
            "goal_met_over_range": max(v[0] for v in results.values()) <= BF16_RELATIVE,
            "goal_met_over_magnitude": max(v[1] for v in results.values()) <= BF16_RELATIVE}


def check_backends(folder: Path) -> dict:
    """ONNX Runtime's CUDA provider against PyTorch (bf16 autocast) on the default model at 518²."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "backends.py"), "--device", "cuda",
                           "--repeats", "20"], capture_output=True, text=True, timeout=1800, cwd=REPO)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    (folder / "backends.json").write_text(done.stdout)
    report = json.loads(done.stdout)
    return {key: report[key] for key in ("median_seconds", "ratio_onnxruntime_over_torch", "faster", "torch_dtype",
                                         "onnxruntime_provider", "output")}


CHECKS: dict[str, Callable[[Path], dict]] = {"bench": check_bench, "predict": check_predict, "parity": check_parity,
                                              "backends": check_backends}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("gpu-checks"))
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated checks: {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: these checks need one")
    summary: dict[str, dict] = {"gpu": {"name": torch.cuda.get_device_name(0), "torch": torch.__version__,
                                        "cuda": torch.version.cuda}}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        folder = args.output / name
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            summary[name] = CHECKS[name](folder)
        except Exception as exc:  # one failed check must not lose the others' figures
            summary[name] = {"error": f"{type(exc).__name__}: {exc}"}
        summary[name]["check_seconds"] = round(time.perf_counter() - started, 1)
        (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({name: summary[name]}), flush=True)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
