"""How much memory a batch may take: what the machine has free, what an architecture needs per patch token,
and whether an exception was an allocation failure; and the C allocator's policy for CPU inference."""

from __future__ import annotations

import ctypes
import functools
import os
import platform

import torch

from anydepth_cli.errors import MachineError
from anydepth_cli.models.config import NetworkConfig

LARGE_WEIGHTS = 1 << 30
"""Networks whose weights take at least this many bytes have their need said before they load."""


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation on `device` can take now (None when unknown): the GPU's free memory
    plus what torch holds cached, or for the CPU (and MPS, which shares it) the least of the
    kernel's available memory, the cgroup's headroom and the address-space limit's headroom."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    known = [value for value in (_meminfo_available(), _cgroup_headroom(), _address_space_headroom())
             if value is not None]
    return min(known) + retained_free_bytes() if known else None


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
"""glibc's `mallopt` parameters (malloc.h)."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc 2.33 or later (with `mallopt` and `mallinfo2`), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return libc


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of handing it back to the system (glibc only; whether
    it applied is returned).

    By default glibc maps every block over 32 MB afresh and unmaps it when freed, so each forward pass of a
    network at full resolution faults in its large activations page by page, zero-filled by the kernel: on a
    CPU that is about a tenth of the time of a 518² SDT forward. Kept, the freed blocks serve the next
    allocations. The process's resident size then stays near its peak until it exits; `available_memory`
    counts what it holds free.
    """
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def release_freed_memory() -> None:
    """Hand the memory this process holds free back to the system (glibc's `malloc_trim`)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def retained_free_bytes() -> int:
    """Bytes the C allocator holds free for this process's next allocations (0 where unknown)."""
    libc = _glibc()
    return int(libc.mallinfo2().fordblks) if libc is not None else 0


def _read_number(path: str, key: str | None = None) -> int | None:
    """An integer file (or the value after `key` in a `key value [kB]` file); None if absent or unlimited."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        return None
    if key is not None:
        line = next((line for line in text.splitlines() if line.startswith(key)), None)
        if line is None:
            return None
        fields = line[len(key):].split()
        return int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    text = text.strip()
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    return _read_number("/proc/meminfo", "MemAvailable:")


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1)."""
    try:
        with open("/proc/self/cgroup") as handle:
            groups = handle.read().splitlines()
    except OSError:
        return None
    for line in groups:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            folder = "/sys/fs/cgroup" + path.rstrip("/")
            limit, used = _read_number(folder + "/memory.max"), _read_number(folder + "/memory.current")
        elif "memory" in controllers.split(","):
            folder = "/sys/fs/cgroup/memory" + path.rstrip("/")
            limit = _read_number(folder + "/memory.limit_in_bytes")
            used = _read_number(folder + "/memory.usage_in_bytes")
        else:
            continue
        if limit is not None and used is not None and limit < 1 << 60:
            return max(0, limit - used)
    return None


def _address_space_headroom() -> int | None:
    """RLIMIT_AS minus the address space in use."""
    try:
        import resource
    except ImportError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    size = _read_number(f"/proc/{os.getpid()}/status", "VmSize:")
    if limit == resource.RLIM_INFINITY or size is None:
        return None
    return max(0, limit - size)


def amount(count: int) -> str:
    """Bytes as `1.2 GB` or `340 MB`."""
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.0f} MB"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an allocation failure (torch's on any device, or Python's)."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and ("not enough memory" in message or "can't allocate memory" in message
                                              or "out of memory" in message)


def activation_bytes_per_token(config: NetworkConfig) -> int:
    """An upper estimate of the fp32 activation memory one patch token needs at its peak (the head,
    which works at the input's full resolution, dominates): on the registry models and the test
    fixtures it is 1.0–1.6× what they use on the CPU."""
    if config.head == "sdt":
        head = 6 * config.fusion
    else:
        head = 2 * config.features
    return 4 * (head * config.patch_size**2 + 32 * config.embed)


def weights_memory(network: torch.nn.Module) -> int:
    """Bytes the weights of `network` take in float32, as they are loaded and trained."""
    return 4 * sum(t.numel() for t in network.state_dict().values())


def require_weights_memory(config: NetworkConfig) -> int:
    """The bytes `weights_memory` says the network needs; MachineError, before anything is allocated, when this
    machine has less memory free (where that is known)."""
    from anydepth_cli.models.network import build_network

    need = weights_memory(build_network(config, device="meta"))
    free = available_memory(torch.device("cpu"))
    if free is not None and need > free:
        raise MachineError(f"not enough memory for the network: its weights need about {amount(need)} (float32), "
                           f"{amount(free)} is free")
    return need


def weights_note(network: torch.nn.Module) -> str:
    """` (weights: about 3.6 GB)` for a network whose weights take at least LARGE_WEIGHTS, else nothing."""
    need = weights_memory(network)
    return f" (weights: about {amount(need)})" if need >= LARGE_WEIGHTS else ""


def hold_large_encoder_in(network: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """On a GPU, with `dtype` a half precision, an encoder whose weights take at least LARGE_WEIGHTS in float32
    (VGGT-1B's aggregator) is held in `dtype`, halving its memory; autocast computes in `dtype` anyway."""
    encoder = network.encoder
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and weights_memory(encoder) >= LARGE_WEIGHTS:
        encoder.to(dtype)
