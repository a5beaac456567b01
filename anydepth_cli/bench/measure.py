"""Measuring on a device: synchronised wall times and their statistics, the matmul peak, peak memory and the
machine's description."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from anydepth_cli import __version__
from anydepth_cli.inference.memory import release_freed_memory
from anydepth_cli.inference.onnx_backend import cpu_name
from anydepth_cli.models.fastpath import FAST_DTYPES, ONEDNN_LINEAR

GPU_WARMUP, GPU_RUNS = 10, 50
CPU_WARMUP = 1
CPU_RUNS = (3, 20)
"""On the CPU, `runs` left to the default is as many as fit in CPU_TIME_BUDGET_S, within these bounds."""
CPU_TIME_BUDGET_S = 30.0
MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}
MATMUL_SAMPLES = 5


@dataclass(frozen=True)
class Latency:
    """Per-forward wall time (one batch) over the timed runs, in milliseconds."""

    mean_ms: float
    std_ms: float
    p50_ms: float
    p95_ms: float
    runs: int
    warmup: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float], warmup: int) -> "Latency":
        ms = sorted(s * 1e3 for s in seconds)
        return cls(statistics.fmean(ms), statistics.stdev(ms) if len(ms) > 1 else 0.0,
                   percentile(ms, 50), percentile(ms, 95), len(ms), warmup)


@dataclass(frozen=True)
class MatmulPeak:
    """The best FLOP/s of an n×n by n×n product in the run's dtype (2n³ FLOPs each) by any of `kernels`."""

    size: int
    dtype: str
    flops_per_s: float
    samples: tuple[float, ...]
    """Best FLOP/s of each probe: one before every configuration and one after the last."""
    kernels: tuple[str, ...] = ("torch.mm",)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile of sorted values, linearly interpolated between closest ranks."""
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on `device` (GPUs run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(forward: Callable[[], Any], device: torch.device) -> float:
    """Seconds `forward()` takes, its queued work on `device` included."""
    synchronize(device)
    start = time.perf_counter()
    forward()
    synchronize(device)
    return time.perf_counter() - start


def matmul_kernels(device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    """The matrix products a peak is taken over: `torch.mm`, and on the CPU in float32 or bf16 also oneDNN's
    matmul, which the fast path runs linear layers on (MKL's `torch.mm` uses only AVX2 on AMD processors)."""
    kernels: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]] = {"torch.mm": torch.mm}
    if device.type == "cpu" and dtype in FAST_DTYPES and ONEDNN_LINEAR:
        kernels["oneDNN matmul"] = lambda a, b: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return kernels


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None,
                samples: int = MATMUL_SAMPLES) -> tuple[int, float]:
    """(n, best FLOP/s) of an n×n by n×n product in `dtype` on `device`: the best of `samples` timings of each of
    `matmul_kernels`.

    n defaults to MATMUL_SIZE for the device type; on GPUs each timing covers 10 products.
    """
    n = size or MATMUL_SIZE.get(device.type, MATMUL_SIZE["cuda"])
    repeat = 1 if device.type == "cpu" else 10
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    with torch.inference_mode():
        for product in matmul_kernels(device, dtype).values():
            product(a, b)
            for _ in range(samples):
                synchronize(device)
                start = time.perf_counter()
                for _ in range(repeat):
                    product(a, b)
                synchronize(device)
                best = min(best, (time.perf_counter() - start) / repeat)
    return n, 2 * n**3 / best


class PeakMemory:
    """Peak memory of one configuration: CUDA peak allocated, or the process's peak RSS on the CPU.

    On Linux the RSS high-water mark is reset per configuration (`/proc/self/clear_refs`), after the
    memory the process holds free is handed back, so it is the most the whole process held while
    that configuration ran; where that reset is refused it is process-wide and only grows (`scope`
    says which).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.description = ("CUDA peak allocated by tensors (torch.cuda.max_memory_allocated) over each "
                                "configuration's warm-up, without the other heads' weights")
        elif device.type == "cpu":
            per_config = self._reset_rss()
            self.description = ("peak resident set size (VmHWM) of the whole process over each configuration's "
                                "warm-up: interpreter, weights and activations, without the other heads' weights, "
                                + ("reset before each configuration" if per_config else
                                   "process-wide and monotonic (the reset was refused)"))
        else:
            self.description = f"not measured on {device.type}"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.device.type == "cpu":
            release_freed_memory()
            self._reset_rss()

    def read(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.device.type == "cpu":
            return peak_rss_bytes()
        return None

    @staticmethod
    def _reset_rss() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU, GPU, torch and thread details of the machine the run is on."""
    info: dict[str, Any] = {
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "anydepth_cli": __version__, "device": str(device), "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def auto_warmup(device: torch.device, compile: bool) -> int:
    """Warm-up forwards when `--warmup` is not given: 10 on GPUs, 1 on the CPU (2 when compiling)."""
    if device.type == "cpu":
        return CPU_WARMUP + int(compile)
    return GPU_WARMUP


def auto_runs(device: torch.device, seconds_per_forward: float) -> int:
    """Timed forwards when `--runs` is not given: 50 on GPUs; on the CPU as many as fit in
    CPU_TIME_BUDGET_S at the observed speed, between CPU_RUNS bounds."""
    if device.type != "cpu":
        return GPU_RUNS
    low, high = CPU_RUNS
    return max(low, min(high, int(CPU_TIME_BUDGET_S / max(seconds_per_forward, 1e-9))))
