"""Numeric precision: the dtype a `--precision` names on a device (and why `auto` chose it), what this CPU offers
for bf16, and the one mixed-precision context inference, training and bench run their networks under."""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anydepth_cli.errors import UsageError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

BF16_INSTRUCTIONS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"))
"""/proc/cpuinfo flags of the instruction sets that run bf16 matrix products natively, fastest first, with the
names they are reported by."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of this machine's first CPU (empty where /proc/cpuinfo cannot be read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_bf16_instructions() -> str | None:
    """The fastest instruction set this CPU runs bf16 matrix products with ("AMX-BF16" or "AVX512-BF16"), or None
    where it has neither (oneDNN then emulates bf16 in fp32, slower than fp32 itself)."""
    flags = cpu_flags()
    return next((name for flag, name in BF16_INSTRUCTIONS if flag in flags), None)


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype a `--precision` resolved to on a device, and the reason, in words."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return dtype_name(self.dtype)


def choose_precision(precision: str, device: torch.device) -> PrecisionChoice:
    """`auto` is bf16 on GPUs that support it, fp16 on other GPUs and on MPS, and on the CPU bf16 where it has
    AMX-BF16 or AVX512-BF16 (see `cpu_bf16_instructions`), else fp32; any other name is taken as given."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return PrecisionChoice(DTYPES[precision], f"--precision {precision}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice(torch.bfloat16, "auto: the GPU supports bf16")
        return PrecisionChoice(torch.float16, "auto: the GPU has no bf16")
    if device.type == "mps":
        return PrecisionChoice(torch.float16, "auto: fp16 on MPS")
    instructions = cpu_bf16_instructions()
    if instructions is not None:
        return PrecisionChoice(torch.bfloat16, f"auto: the CPU has {instructions}")
    return PrecisionChoice(torch.float32, "auto: the CPU has neither AMX-BF16 nor AVX512-BF16")


def select_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype `--precision` names on `device` (see `choose_precision`)."""
    return choose_precision(precision, device).dtype


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype `--precision` names for training: as `select_dtype`, except that `auto` trains in fp32 on the
    CPU (bf16's accuracy cost is measured for inference only)."""
    if precision == "auto" and device.type == "cpu":
        return torch.float32
    return select_dtype(precision, device)


def slow_precision_note(dtype: torch.dtype | None, device: torch.device) -> str | None:
    """One line saying a bf16 run on a CPU without AMX-BF16 or AVX512-BF16 will be slow; None otherwise (and for a
    runtime without a torch dtype)."""
    if device.type != "cpu" or dtype != torch.bfloat16 or cpu_bf16_instructions() is not None:
        return None
    return "this CPU has neither AMX-BF16 nor AVX512-BF16: bf16 runs emulated and will be slower than fp32"


def autocast(device: torch.device, dtype: torch.dtype, native: torch.dtype = torch.float32,
             cache_enabled: bool = True) -> AbstractContextManager[Any]:
    """Mixed precision in `dtype` for a network whose own weights are in `native`: nothing when they are equal (a
    full-precision run, or a network already cast to `dtype`), else `torch.autocast` (`cache_enabled=False` under
    CUDA-graph capture, whose weight casts must be replayed, not cached)."""
    if dtype == native:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)


def network_dtype(network: torch.nn.Module) -> torch.dtype:
    """The dtype a network was cast to: its floating-point parameters' one, or float32 when they differ (a large
    encoder held in half precision under a float32 head, which autocast must still run)."""
    dtypes = {p.dtype for p in network.parameters() if p.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """"fp32", "fp16" or "bf16"."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
