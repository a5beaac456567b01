"""The predictor: RGB images in, maps of the model's own quantity (depth or disparity) at each image's size out.

Memory. Every network input holds at most `token_cap` patches (`capped_network_size`). Before
each network call the predictor estimates what a batch needs (`DepthPredictor.memory_needed`:
a per-patch figure from the architecture, which errs high, plus the image's own float copy and
output map) and runs no more images together than fit in `MEMORY_SHARE` of what the machine
has free (`available_memory`: the GPU's free memory, or on the CPU the least of free RAM, the
cgroup's headroom and the address-space limit's). If the network still runs out of memory the
batch is halved and retried, and later batches stay within the reduced size. An image that
cannot fit even alone is an `InputError` (one line, the run goes on).
"""

from __future__ import annotations

import gc
import os
from collections import defaultdict
from contextlib import nullcontext
from typing import Protocol, Sequence

import numpy as np
import torch

from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.inference.preprocess import capped_network_size, prepare_batch, resize_output
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

MEMORY_SHARE = 0.8
"""The share of the free memory one batch may plan to use (the rest: decoding threads, writers)."""



class MapPredictor(Protocol):
    """What tiling, video, evaluation and point clouds need from a depth network.

    `predict_batch` takes RGB images (H×W×3, uint8, or float32 in [0, 1]) and returns one
    float32 H×W map per image at that image's own size, holding the model's own quantity:
    affine-invariant depth (large = far) or disparity (large = near), as `output_kind` says.
    Images of equal size are run through the network together.
    """

    input_size: int
    output_kind: str

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an unavailable device is a usage error."""
    if name not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise UsageError(f"--device {name} is not available on this machine (try --device cpu)")
    return torch.device(name)


def select_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on GPUs that support it, fp16 on other GPUs, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def available_memory(device: torch.device) -> int | None:
    """Bytes a new allocation on `device` can take now (None when unknown): the GPU's free memory
    plus what torch holds cached, or for the CPU (and MPS, which shares it) the least of the
    kernel's available memory, the cgroup's headroom and the address-space limit's headroom."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    known = [value for value in (_meminfo_available(), _cgroup_headroom(), _address_space_headroom())
             if value is not None]
    return min(known) if known else None


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


def _amount(count: int) -> str:
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


class DepthPredictor:
    """A loaded network with its input size, device, precision and batch size."""

    def __init__(self, network: DepthNetwork, input_size: int = 518, device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32, batch_size: int = 4) -> None:
        if input_size < network.config.patch_size:
            raise UsageError(f"--input-size must be at least {network.config.patch_size}")
        if batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        self.device = device or torch.device("cpu")
        self.network = network.to(self.device).eval()
        self.input_size = input_size
        self.dtype = dtype
        self.batch_size = batch_size
        self.output_kind = network.config.output
        self._bytes_per_token = activation_bytes_per_token(network.config)
        self._batch_limit: int | None = None

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def network_input(self, height: int, width: int) -> tuple[int, int]:
        """The network input size (height, width) of an image of this size (see `capped_network_size`)."""
        return capped_network_size(height, width, self.input_size, self.network.config.patch_size)

    def memory_needed(self, size: tuple[int, int], image_pixels: int) -> int:
        """Estimated peak bytes of one image of `image_pixels` pixels run at network input `size`:
        activations, plus its float32 copy and output map at the image's own size."""
        patch = self.network.config.patch_size
        tokens = (size[0] // patch) * (size[1] // patch)
        return tokens * self._bytes_per_token + 16 * image_pixels

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The model's quantity (float32 H×W, `output_kind`) for each RGB image, at that image's size.

        Raises InputError when one image alone needs more memory than the machine has.
        """
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[self.network_input(*image.shape[:2])].append(index)
        results: list[np.ndarray | None] = [None] * len(images)
        for size, indices in groups.items():
            maps = self._predict_group([images[i] for i in indices], size)
            for index, values in zip(indices, maps):
                results[index] = values
        return results

    def _predict_group(self, images: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
        """Maps for images of one network input size, in batches that fit in memory."""
        need = self.memory_needed(size, max(image.shape[0] * image.shape[1] for image in images))
        free = available_memory(self.device)
        step = self.batch_size if self._batch_limit is None else min(self.batch_size, self._batch_limit)
        if free is not None:
            fit = int(free * MEMORY_SHARE // need)
            if fit < 1:
                raise InputError(f"not enough memory: a {size[1]}x{size[0]} network input needs about "
                                 f"{_amount(need)}, {_amount(free)} is free")
            step = min(step, fit)
        results: list[np.ndarray] = []
        while len(results) < len(images):
            chunk = images[len(results): len(results) + step]
            try:
                results.extend(self._run(chunk, size))
            except (MemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc):
                    raise
                self._release()
                if step == 1:
                    raise InputError(f"out of memory running a {size[1]}x{size[0]} network input "
                                     f"(about {_amount(need)} estimated)") from None
                step //= 2
                self._batch_limit = step
        return results

    def _run(self, images: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
        """One network call on `images` resized to `size`; maps at each image's own size."""
        batch = prepare_batch(images, size).to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            output = self.network(batch)
        return [resize_output(output[i: i + 1], image.shape[:2])[0].cpu().numpy() for i, image in enumerate(images)]

    def _release(self) -> None:
        """Give back what a failed allocation left behind."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
