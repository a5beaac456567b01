"""Measuring SDT and DPT decoders: parameters, FLOPs, latency, peak memory and achieved FLOP/s.

`run_bench(settings)` builds each requested head (BENCH_HEADS) on the chosen encoder with random
weights (no download), counts its FLOPs on the meta device both correctly and by the paper's
convention, times it at every resolution and returns a `BenchResult`; `report.py` turns that
into files. At each resolution the heads' timed forwards alternate (one of each per round), so
that load from other processes on a shared machine falls on all heads alike.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from anydepth_cli import __version__
from anydepth_cli.errors import UsageError
from anydepth_cli.inference.memory import keep_freed_memory, release_freed_memory, require_weights_memory
from anydepth_cli.inference.onnx_backend import cpu_name
from anydepth_cli.inference.precision import dtype_name, select_dtype
from anydepth_cli.inference.predictor import DepthPredictor, select_device
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.fastpath import FAST_DTYPES, ONEDNN_LINEAR
from anydepth_cli.models.fuse import prepare_for_inference
from anydepth_cli.models.network import DepthNetwork, build_network
from anydepth_cli.models.registry import ENCODER_MODELS, MODELS, VIT_B, VIT_L, VIT_S

ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dinov3-vits": ("DINOv3 ViT-S/16", VIT_S), "dinov3-vitb": ("DINOv3 ViT-B/16", VIT_B),
    "dinov3-vitl": ("DINOv3 ViT-L/16", VIT_L),
}
"""`--encoder` names of the bare DINOv3 encoders the paper's heads are put on: (label, size)."""
PAPER_ENCODER = "dinov3-vitl"
DEFAULT_RESOLUTIONS = (256, 512, 1024)


@dataclass(frozen=True)
class BenchHead:
    """A head `--heads` can name: its label, the architecture head it is, and the settings it is measured in."""

    label: str
    architecture: str
    """The `NetworkConfig.head` it is built as (bench names are not architecture names)."""
    settings: Callable[[int], dict[str, Any]]
    """The head's `NetworkConfig` fields on an encoder of the given width: the paper's for SDT and DPT, Depth
    Anything V2 Large's for its DPT."""
    paper: bool
    """Whether the paper measured this head, so its figures are compared with ours."""


BENCH_HEADS: dict[str, BenchHead] = {
    "sdt": BenchHead("SDT-256", "sdt", lambda width: dict(fusion=256, cls=True, detail_enhancer=True), True),
    "dpt": BenchHead("DPT-512 (paper)", "dpt-dinov3",
                     lambda width: dict(features=512, out_channels=(width,) * 4, cls=True, batchnorm=True, outputs=1),
                     True),
    "dav2-dpt": BenchHead("DAv2 DPT-256", "dpt",
                          lambda width: dict(features=256, out_channels=(256, 512, 1024, 1024), cls=False), False),
    "vggt-dpt": BenchHead("VGGT DPT-256", "dpt-vggt",
                          lambda width: dict(features=256, out_channels=(256, 512, 1024, 1024), outputs=2), False),
}
"""`--heads` names: the paper's SDT, the paper's DPT (DINOv3's DPT head), Depth Anything V2's DPT and VGGT's depth
head (its DPT with depth and confidence outputs)."""
DEFAULT_HEADS = ("sdt", "dpt")

FLOP_CONVENTION = (
    "torch.utils.flop_counter.FlopCounterMode: a multiply-add counts as 2 FLOPs; only matrix multiplications, "
    "convolutions (transposed ones by their input size) and scaled-dot-product attention (its two matrix products) "
    "are counted, not bias adds, normalisation, activations, interpolation or grid sampling; per image, counted at "
    "batch 1 on the meta device on the network as built (before inference folding, which removes no counted op)"
)
PAPER_FLOP_CONVENTION = (
    "twice the multiply-adds the `thop` package counts, decoder only, on the network as built: "
    "only layers with a thop rule count; a convolution, transposed ones included, is output elements × input "
    "channels / groups × kernel elements (so a transposed convolution is counted by its output size, 16× the "
    "work of the 4×4 stride-4 one and 4× that of the 2×2 stride-2 one), a linear layer output elements × input "
    "features, a BatchNorm 2 per input element, twice that with an affine transform; biases, "
    "activations and functional ops (interpolation, grid sampling, concatenation) count nothing"
)

GPU_WARMUP, GPU_RUNS = 10, 50
CPU_WARMUP = 1
CPU_RUNS = (3, 20)
"""On the CPU, `runs` left to the default is as many as fit in CPU_TIME_BUDGET_S, within these bounds."""
CPU_TIME_BUDGET_S = 30.0
MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}
MATMUL_SAMPLES = 5

Progress = Callable[[str, int, int], None]
"""Told what is being done now, how many configurations are finished and how many there are in all."""
Step = Callable[[str], None]
"""Told what is being done now."""


@dataclass(frozen=True)
class BenchModel:
    """One network to measure: what `--encoder` named, which head, its label and architecture."""

    encoder: str
    head: str
    label: str
    config: NetworkConfig
    paper: bool
    """True for the paper's set-up (DINOv3 ViT-L/16 with the paper's SDT or DPT), whose figures we compare."""


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
class FlopCount:
    """FLOPs of one image through the encoder and through the decoder (FLOP_CONVENTION), and the decoder's by
    the paper's convention (PAPER_FLOP_CONVENTION)."""

    encoder: int
    decoder: int
    decoder_thop: int

    @property
    def total(self) -> int:
        return self.encoder + self.decoder


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


@dataclass(frozen=True)
class MatmulPeak:
    """The best FLOP/s of an n×n by n×n product in the run's dtype (2n³ FLOPs each) by any of `kernels`."""

    size: int
    dtype: str
    flops_per_s: float
    samples: tuple[float, ...]
    """Best FLOP/s of each probe: one before every configuration and one after the last."""
    kernels: tuple[str, ...] = ("torch.mm",)


@dataclass(frozen=True)
class DecoderParameters:
    """Head parameters of the paper's SDT and the paper's DPT on one DINOv3 encoder size."""

    encoder: str
    sdt: int
    dpt: int

    @property
    def reduction(self) -> float:
        """Fraction of the DPT head's parameters the SDT head does without."""
        return 1 - self.sdt / self.dpt


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


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile of sorted values, linearly interpolated between closest ranks."""
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def paper_config(template: NetworkConfig, head: str) -> NetworkConfig:
    """Bench head `head` (a BENCH_HEADS name), in its bench settings, on `template`'s encoder."""
    encoder = dict(embed=template.embed, depth=template.depth, heads=template.heads, layers=template.layers,
                   encoder=template.encoder, encoder_norm=template.encoder_norm, patch_encoder=template.patch_encoder,
                   patch_depth=template.patch_depth, patch_heads=template.patch_heads)
    spec = BENCH_HEADS[head]
    return NetworkConfig(**encoder, head=spec.architecture, **spec.settings(template.embed))


def dinov3_config(size: dict[str, Any], head: str) -> NetworkConfig:
    """Bench head `head` on a DINOv3 encoder of `size` (one of VIT_S/B/L)."""
    template = NetworkConfig(**size, encoder="dinov3", encoder_norm=True, head="sdt")
    return paper_config(template, head)


def resolve_models(encoder: str, heads: Sequence[str], arch: NetworkConfig | None = None) -> list[BenchModel]:
    """The networks to measure, one per bench head.

    `encoder` is a DINOv3 size (`dinov3-vits|vitb|vitl`: the heads in their bench settings on it)
    or a registry model (its own head for the bench head it is, the others in their bench
    settings on its encoder); `arch`, when given, stands in for a registry model's architecture
    and is named `encoder`.
    """
    unknown = [h for h in heads if h not in BENCH_HEADS]
    if unknown or not heads:
        raise UsageError(f"--heads must list some of {', '.join(BENCH_HEADS)}, not {','.join(heads) or 'nothing'}")
    if arch is None and encoder in ENCODERS:
        name, size = ENCODERS[encoder]
        return [BenchModel(encoder, h, f"{name} + {BENCH_HEADS[h].label}", dinov3_config(size, h),
                           encoder == PAPER_ENCODER and BENCH_HEADS[h].paper)
                for h in heads]
    named = {**MODELS, **ENCODER_MODELS}
    if arch is None and encoder not in named:
        raise UsageError(f"--encoder must be one of {', '.join([*ENCODERS, *named])}, not {encoder!r}")
    own = arch or named[encoder].config
    return [BenchModel(encoder, h, encoder, own, False) if own.head == BENCH_HEADS[h].architecture else
            BenchModel(encoder, h, f"{encoder} encoder + {BENCH_HEADS[h].label}", paper_config(own, h), False)
            for h in heads]


def head_parameters(config: NetworkConfig) -> tuple[int, int]:
    """(decoder, total) parameter counts of the network `config` describes (built on the meta device)."""
    network = build_network(config, device="meta")
    return sum(p.numel() for p in network.head.parameters()), sum(p.numel() for p in network.parameters())


def decoder_parameter_table() -> list[DecoderParameters]:
    """Head parameters of the paper's SDT and the paper's DPT on DINOv3 ViT-S, ViT-B and ViT-L."""
    return [DecoderParameters(name, head_parameters(dinov3_config(size, "sdt"))[0],
                              head_parameters(dinov3_config(size, "dpt"))[0])
            for name, (_, size) in ENCODERS.items()]


def module_flops(fn: Callable[..., Any], *inputs: Any) -> tuple[int, Any]:
    """FLOPs `fn(*inputs)` performs (FLOP_CONVENTION) and what it returned."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        result = fn(*inputs)
    return counter.get_total_flops(), result


def thop_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Multiply-adds the `thop` package counts for one call of leaf `module` from input `x` to output `y`
    (PAPER_FLOP_CONVENTION), for the layer kinds our decoders hold: convolutions, linear layers and BatchNorm;
    0 for the others (activations, identities, our parameter-free modules), as in thop."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return y.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return y.numel() * module.in_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 2 * x.numel() * (2 if module.affine else 1)
    return 0


class ThopCounter(AbstractContextManager["ThopCounter"]):
    """While entered, counts the FLOPs of forwards through `module` by the paper's convention (PAPER_FLOP_CONVENTION)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.macs = 0
        self._handles: list[Any] = []

    def __enter__(self) -> "ThopCounter":
        self._handles = [leaf.register_forward_hook(self._count) for leaf in self.module.modules()
                         if next(leaf.children(), None) is None]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _count(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.macs += thop_macs(module, inputs[0], output)

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count_flops(config: NetworkConfig, resolution: int) -> FlopCount:
    """Encoder and decoder FLOPs of one `resolution`² image, and the decoder's by the paper's convention, counted
    on the meta device (no compute)."""
    network = build_network(config, device="meta")
    image = torch.empty(1, 3, resolution, resolution, device="meta")
    encoder, (features, grid) = module_flops(network.encoder, image)
    with ThopCounter(network.head) as thop:
        decoder, _ = module_flops(network.head, features, grid)
    return FlopCount(encoder, decoder, thop.flops)


def default_resolutions(encoder: str, arch: NetworkConfig | None = None) -> tuple[int, ...]:
    """DEFAULT_RESOLUTIONS, each rounded to the nearest multiple of `encoder`'s patch size (252, 518 and 1022 for
    patch 14, the sizes a patch-14 encoder such as VGGT's accepts)."""
    patch = resolve_models(encoder, ["sdt"], arch)[0].config.patch_size
    return tuple(max(patch, round(r / patch) * patch) for r in DEFAULT_RESOLUTIONS)


def check_resolution(model: BenchModel, resolution: int) -> None:
    """A usage error unless `resolution` is a positive multiple of the encoder's patch size."""
    patch = model.config.patch_size
    if resolution < patch or resolution % patch:
        near = max(patch, round(resolution / patch) * patch)
        raise UsageError(f"--resolution {resolution} is not a multiple of {model.label}'s patch size {patch} "
                         f"(try {near})")


def synchronize(device: torch.device) -> None:
    """Wait for queued work on `device` (GPUs run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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
        taken = [_timed(forward, device) for forward in self.forwards]
        for seconds, value in zip(self.seconds, taken):
            seconds.append(value)
        return sum(taken)


def _timed(forward: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    forward()
    synchronize(device)
    return time.perf_counter() - start


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
        config.probe_seconds = sum(_timed(forward, device) for forward in forwards)
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

