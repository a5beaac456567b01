"""Measuring SDT and DPT decoders: parameters, FLOPs, latency, peak memory and achieved FLOP/s.

`run_bench(settings)` builds each requested head (BENCH_HEADS, catalogue.py) on the chosen encoder
with random weights (no download), counts its FLOPs on the meta device both correctly and by the
paper's convention (flops.py), times it at every resolution (measure.py) and returns a
`BenchResult`; `report.py` turns that into files. At each resolution the heads' timed forwards
alternate (one of each per round), so that load from other processes on a shared machine falls
on all heads alike.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import torch
from torch import nn

from anydepth_cli.bench.catalogue import (DEFAULT_HEADS, DEFAULT_RESOLUTIONS, PAPER_ENCODER, BenchModel,
                                          DecoderParameters, check_resolution, decoder_parameter_table, head_parameters,
                                          resolve_models)
from anydepth_cli.bench.flops import FLOP_CONVENTION, PAPER_FLOP_CONVENTION, FlopCount, count_flops
from anydepth_cli.bench.measure import (Latency, MatmulPeak, PeakMemory, auto_runs, auto_warmup, machine_info,
                                        matmul_kernels, matmul_peak, synchronize, timed)
from anydepth_cli.errors import UsageError
from anydepth_cli.inference.memory import keep_freed_memory, require_weights_memory
from anydepth_cli.inference.precision import dtype_name, select_dtype
from anydepth_cli.inference.predictor import DepthPredictor, select_device
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.models.network import DepthNetwork, build_network

Progress = Callable[[str, int, int], None]
"""Told what is being done now, how many configurations are finished and how many there are in all."""
Step = Callable[[str], None]
"""Told what is being done now."""


@dataclass(frozen=True)
class BenchSettings:
    """What to measure and how; `runs`/`warmup` of None adapt to the device (see `auto_warmup`/`auto_runs`)."""

    encoder: str = PAPER_ENCODER
    heads: tuple[str, ...] = DEFAULT_HEADS
    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 1
    runs: int | None = None
    warmup: int | None = None
    compile: bool = False
    graphs: bool | None = None
    """Replay the forward from captured CUDA graphs, as `predict` does (None: on CUDA)."""
    arch: NetworkConfig | None = None
    """An architecture used in place of a named `encoder` (its own head is kept for its head type)."""
    seed: int = 0


@dataclass(frozen=True)
class Measurement:
    """Everything measured for one head at one resolution: the latency of one image (`latency`), and with a
    `batch_size` over 1 that of a batch (`batch_latency`), through the forward `predict` runs (CUDA graphs on CUDA,
    whose capture took `capture_seconds`, apart from the timings)."""

    encoder: str
    head: str
    label: str
    paper: bool
    resolution: int
    batch_size: int
    decoder_params: int
    total_params: int
    flops: FlopCount
    latency: Latency
    peak_memory_bytes: int | None
    matmul_peak_flops: float
    batch_latency: Latency | None = None
    capture_seconds: float = 0.0

    @property
    def steady(self) -> Latency:
        """The latency of a whole batch: `batch_latency`, or with batch 1 `latency`."""
        return self.batch_latency or self.latency

    @property
    def throughput(self) -> float:
        """Images per second at `batch_size`."""
        return self.batch_size / (self.steady.mean_ms / 1e3)

    @property
    def decoder_share(self) -> float:
        return self.flops.decoder / self.flops.total

    @property
    def achieved_flops(self) -> float:
        """Counted FLOPs per second: FLOPs of a batch over the median (p50) latency, which, unlike the mean,
        is not pulled up by the odd forward slowed by other processes on a shared machine."""
        return self.flops.total * self.batch_size / (self.steady.p50_ms / 1e3)

    @property
    def peak_ratio(self) -> float:
        """Achieved FLOP/s over the matmul peak measured in the same run."""
        return self.achieved_flops / self.matmul_peak_flops

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flops"] = {"encoder": self.flops.encoder, "decoder": self.flops.decoder, "total": self.flops.total,
                         "decoder_share": self.decoder_share, "decoder_thop": self.flops.decoder_thop}
        data.update(throughput_images_per_s=self.throughput, achieved_flops_per_s=self.achieved_flops,
                    matmul_peak_ratio=self.peak_ratio)
        return data


@dataclass
class BenchResult:
    """A finished run: settings, machine, matmul peak, memory meaning and one measurement per configuration."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    matmul_peak: MatmulPeak
    memory: str
    measurements: list[Measurement]
    parameters: list[DecoderParameters]
    started: str
    seconds: float
    flop_convention: str = FLOP_CONVENTION
    paper_flop_convention: str = PAPER_FLOP_CONVENTION


@dataclass
class Configuration:
    """One head at one resolution while it is measured: its forward, counts, warm-up and timed seconds."""

    model: BenchModel
    resolution: int
    forwards: list[Callable[[], Any]]
    """One image's forward, then (with a batch size over 1) a batch's."""
    flops: FlopCount
    parameters: tuple[int, int]
    warmup: int
    seconds: list[list[float]]
    """Timed seconds of each of `forwards`."""
    probe_seconds: float = math.nan
    """Wall time of its last warm-up (or first timed) forwards, which sets the run count when `runs` is not given."""
    memory_bytes: int | None = None
    capture_seconds: float = 0.0

    @property
    def what(self) -> str:
        return f"{self.model.head.upper()} {self.resolution}²"

    @property
    def runs(self) -> int:
        return min(len(seconds) for seconds in self.seconds)

    def measurement(self, batch_size: int) -> Measurement:
        m = self.model
        latencies = [Latency.from_seconds(seconds, self.warmup) for seconds in self.seconds]
        return Measurement(m.encoder, m.head, m.label, m.paper, self.resolution, batch_size, *self.parameters,
                           self.flops, latencies[0], self.memory_bytes, math.nan,
                           latencies[1] if len(latencies) > 1 else None, self.capture_seconds)

    def time_once(self, device: torch.device) -> float:
        """Time each forward once; the seconds they took together."""
        taken = [timed(forward, device) for forward in self.forwards]
        for seconds, value in zip(self.seconds, taken):
            seconds.append(value)
        return sum(taken)


def inference_networks(models: Sequence[BenchModel], device: torch.device, compile: bool,
                       seed: int, dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    """Random-weight networks on `device`, one per model, prepared for inference in `dtype` and optionally compiled.
    They share one encoder (the bench's heads all sit on the same one): timings are the same, and the memory is
    one encoder's."""
    networks: dict[str, nn.Module] = {}
    encoder = None
    for model in models:
        torch.manual_seed(seed)
        network: DepthNetwork = build_network(model.config, device)
        if encoder is not None and type(encoder) is type(network.encoder) and encoder.layers == network.encoder.layers:
            network.encoder = encoder
        encoder = network.encoder
        network = prepare_for_inference(network, dtype)
        networks[model.head] = torch.compile(network) if compile else network
    return networks


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def prepare_configuration(network: nn.Module, others: int, model: BenchModel, resolution: int,
                          settings: BenchSettings, device: torch.device, dtype: torch.dtype, warmup: int,
                          memory: PeakMemory, progress: Step) -> Configuration:
    """Count one head's FLOPs at one resolution and run its first forwards on their own: the warm-ups (or, with
    none, the first timed forward). Its peak memory is taken over these, less `others`, the bytes of the other
    heads' weights, which the process also holds."""
    what = f"{model.head.upper()} {resolution}²"
    progress(f"{what} · counting FLOPs")
    predictor = DepthPredictor(network, resolution, device, dtype, settings.batch_size, settings.graphs)
    batches = sorted({1, settings.batch_size})
    with torch.inference_mode():
        images = [torch.randn(size, 3, resolution, resolution, device=device) for size in batches]
    forwards = [lambda image=image: predictor.run(image) for image in images]
    config = Configuration(model, resolution, forwards, count_flops(model.config, resolution),
                           head_parameters(model.config), warmup, [[] for _ in forwards])
    memory.reset()
    if predictor.graphed is not None:
        progress(f"{what} · capturing CUDA graphs")
        for forward in forwards:
            forward()
        synchronize(device)
        config.capture_seconds = predictor.capture_seconds
    for index in range(warmup):
        progress(f"{what} · warm-up {index + 1}/{warmup}")
        config.probe_seconds = sum(timed(forward, device) for forward in forwards)
    if not warmup:
        progress(f"{what} · run 1")
        config.probe_seconds = config.time_once(device)
    used = memory.read()
    config.memory_bytes = None if used is None else max(0, used - others)
    return config


def interleaved_runs(configurations: list[Configuration], device: torch.device, runs: int | None,
                     progress: Step) -> None:
    """Time the configurations' forwards in rounds, one forward of each per round, so that load from other
    processes falls on all alike; `runs` of each, or with None as many as `auto_runs` gives for the slowest."""
    target = runs if runs is not None else auto_runs(device, max(c.probe_seconds for c in configurations))
    while any(c.runs < target for c in configurations):
        for config in configurations:
            if config.runs < target:
                progress(f"{config.what} · run {config.runs + 1}/{target}")
                config.time_once(device)


def run_bench(settings: BenchSettings, progress: Progress = lambda text, done, total: None) -> BenchResult:
    """Measure every requested head at every resolution (see the module docstring)."""
    _check_settings(settings)
    models = resolve_models(settings.encoder, settings.heads, settings.arch)
    resolutions = tuple(sorted(set(settings.resolutions)))
    for model in models:
        for resolution in resolutions:
            check_resolution(model, resolution)
    device = select_device(settings.device)
    dtype = select_dtype(settings.precision, device)
    if device.type == "cpu":
        require_weights_memory(models[0].config)
        keep_freed_memory()  # as `anydepth predict` runs on the CPU
    warmup = settings.warmup if settings.warmup is not None else auto_warmup(device, settings.compile)
    started, clock = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    memory = PeakMemory(device)
    benchmark_flag = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda"
    try:
        measurements, peak = _measure(models, resolutions, settings, device, dtype, warmup, memory, progress)
    finally:
        torch.backends.cudnn.benchmark = benchmark_flag
    order = [m.head for m in models]
    measurements = [replace(m, matmul_peak_flops=peak.flops_per_s)
                    for m in sorted(measurements, key=lambda m: (order.index(m.head), m.resolution))]
    resolved = {
        "encoder": settings.encoder, "arch": settings.arch.to_dict() if settings.arch else None,
        "heads": list(settings.heads), "resolutions": list(resolutions), "device": str(device),
        "precision": dtype_name(dtype), "batch_size": settings.batch_size, "runs": settings.runs,
        "warmup": warmup, "compile": settings.compile, "graphs": device.type == "cuda" and settings.graphs is not False,
        "seed": settings.seed, "weights": "random (no download)",
        "models": {m.head: {"label": m.label, "config": m.config.to_dict()} for m in models},
    }
    return BenchResult(resolved, machine_info(device), peak, memory.description, measurements,
                       decoder_parameter_table(), started, time.perf_counter() - clock)


def _check_settings(settings: BenchSettings) -> None:
    """UsageError for a batch size, run count, warm-up or resolution list out of range."""
    if settings.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if (settings.runs is not None and settings.runs < 1) or (settings.warmup is not None and settings.warmup < 0):
        raise UsageError("--runs must be at least 1 and --warmup at least 0")
    if not settings.resolutions:
        raise UsageError("give at least one --resolution")


def _measure(models: list[BenchModel], resolutions: tuple[int, ...], settings: BenchSettings, device: torch.device,
             dtype: torch.dtype, warmup: int, memory: PeakMemory,
             progress: Progress) -> tuple[list[Measurement], MatmulPeak]:
    """Every model at every resolution, their timed runs alternating, and the matmul peak measured around them."""
    peaks: list[float] = []
    measurements: list[Measurement] = []

    def step(text: str) -> None:
        progress(text, len(measurements), len(models) * len(resolutions))

    step("building the networks")
    networks = inference_networks(models, device, settings.compile, settings.seed, dtype)
    heads = {name: _weight_bytes(network.head) for name, network in networks.items()}
    for resolution in resolutions:
        configurations = []
        for model in models:
            step("matmul peak")
            size, flops_per_s = matmul_peak(device, dtype)
            peaks.append(flops_per_s)
            others = sum(b for name, b in heads.items() if name != model.head)
            configurations.append(prepare_configuration(networks[model.head], others, model, resolution,
                                                        settings, device, dtype, warmup, memory, step))
        interleaved_runs(configurations, device, settings.runs, step)
        measurements.extend(c.measurement(settings.batch_size) for c in configurations)
    del networks
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    step("matmul peak")
    peaks.append(matmul_peak(device, dtype, size)[1])
    peak = MatmulPeak(size, dtype_name(dtype), max(peaks), tuple(peaks), tuple(matmul_kernels(device, dtype)))
    return measurements, peak
