"""The predictor: RGB images in, maps of the model's own quantity (depth or disparity) at each image's size out.

Resizing. Images are resized for the network, and its maps brought back, by the pipeline the network declares
(`NetworkConfig.resize`, `preprocess.RESIZINGS`): every runtime, and through them tiles, video frames, `eval` and the
Python API, resize the same way.

Memory. Every network input holds at most `token_cap` patches (`capped_network_size`; Depth Anything 3's pipeline,
which sets the longer side, never exceeds a square input). Before
each network call the predictor estimates what a batch needs (`BatchedPredictor.memory_needed`:
`memory.activation_bytes_per_token` of the architecture, which errs high, plus the image's own float copy and
output map) and runs no more images together than fit in `MEMORY_SHARE` of what the machine
has free (`memory.available_memory`: the GPU's free memory, or on the CPU the least of free RAM, the
cgroup's headroom and the address-space limit's). If the network still runs out of memory the
batch is halved and retried, and later batches stay within the reduced size. An image that
cannot fit even alone is an `InputError` (one line, the run goes on).
"""

from __future__ import annotations

import gc
from collections import defaultdict
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.inference.graphs import GraphedForward
from anydepth_cli.inference.memory import activation_bytes_per_token, amount, available_memory, is_out_of_memory
from anydepth_cli.inference.precision import autocast, network_dtype
from anydepth_cli.inference.preprocess import Resizing, prepare_batch, prepare_on_device, resizing_of
from anydepth_cli.models.network import DepthNetwork

DEVICES = ("auto", "cpu", "cuda", "mps")

MEMORY_SHARE = 0.8
"""The share of the free memory one batch may plan to use (the rest: decoding threads, writers)."""
CPU_BATCH_TOKENS = 2048
"""The most patch tokens one CPU batch holds: one image that large keeps the cores busy, and more only falls out of
cache (ViT-B + SDT at 518², 1,369 tokens: 4 images a call took 46 % longer in fp32 and 10 % in bf16 than one at a
time on a 2-core Xeon; at 676 tokens and below batching neither gained nor lost)."""


OnDevice = Callable[[int, torch.Tensor], None]
"""Called with an image's index in the batch and its map (H×W, float32) still on the predictor's device."""


class MapPredictor(Protocol):
    """What tiling, video, evaluation and point clouds need from a depth network.

    `predict_batch` takes RGB images (H×W×3, uint8, or float32 in [0, 1]) and returns one
    float32 map per image at that image's own size (or at `sizes`, one (H, W) per image, when
    given), holding the model's own quantity: affine-invariant depth (large = far) or disparity
    (large = near), as `output_kind` says. Images of equal size are run through the network together.
    """

    input_size: int
    output_kind: str

    def predict_batch(self, images: Sequence[np.ndarray],
                      sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]: ...


def select_device(name: str, local_rank: int | None = None) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an unavailable device is a usage error. With `local_rank`
    (a launcher's process on this machine) CUDA means that process's own GPU."""
    if name not in DEVICES:
        raise UsageError(f"--device must be one of {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        raise UsageError(f"--device {name} is not available on this machine (try --device cpu)")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


class BatchedPredictor:
    """A MapPredictor over any runtime: groups images by network size, prepares the batches in sizes that fit in
    memory and resizes the outputs, both by `resizing`; a subclass runs its network on one prepared batch (`run`)."""

    input_size: int
    output_kind: str
    max_depth: float | None = None
    """Metric models: the range's end in metres."""
    patch_size: int
    resizing: Resizing
    batch_size: int
    device: torch.device
    device_hooks = True
    """`predict_batch` takes `on_device` (predictors that remake the maps on the CPU, such as an anchored one, do
    not)."""
    bytes_per_token: int
    """Estimated peak activation bytes per patch token (`memory.activation_bytes_per_token`)."""
    _batch_limit: int | None = None

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's output (B, 1, h, w) for one normalised batch (B, 3, H, W) on `device`."""
        raise NotImplementedError

    def network_input(self, height: int, width: int) -> tuple[int, int]:
        """The network input size (height, width) of an image of this size (see `resizing`)."""
        return self.resizing.network_size(height, width)

    def memory_needed(self, size: tuple[int, int], image_pixels: int) -> int:
        """Estimated peak bytes of one image of `image_pixels` pixels run at network input `size`:
        activations, plus its float32 copy and output map at the image's own size."""
        tokens = (size[0] // self.patch_size) * (size[1] // self.patch_size)
        return tokens * self.bytes_per_token + 16 * image_pixels

    def predict_batch(self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]] | None = None,
                      on_device: OnDevice | None = None) -> list[np.ndarray]:
        """The model's quantity (float32, `output_kind`) for each RGB image, at that image's size or at its entry of
        `sizes`, brought back from the network's resolution by `resizing`. `on_device(index, map)` is called with
        each image's map while it is still on the device (a GPU), before it comes back.

        Raises InputError when one image alone needs more memory than the machine has.
        """
        targets = [tuple(size) for size in sizes] if sizes is not None else [image.shape[:2] for image in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[self.network_input(*image.shape[:2])].append(index)
        results: list[np.ndarray | None] = [None] * len(images)
        for size, indices in groups.items():
            hook = None if on_device is None else lambda i, values, at=indices: on_device(at[i], values)
            maps = self._predict_group([images[i] for i in indices], [targets[i] for i in indices], size, hook)
            for index, values in zip(indices, maps):
                results[index] = values
        return results

    def _predict_group(self, images: list[np.ndarray], targets: list[tuple[int, int]], size: tuple[int, int],
                       on_device: OnDevice | None) -> list[np.ndarray]:
        """Maps at `targets` for images of one network input size, in batches that fit in memory."""
        pixels = max(max(image.shape[0] * image.shape[1], h * w) for image, (h, w) in zip(images, targets))
        need = self.memory_needed(size, pixels)
        free = available_memory(self.device)
        step = self.batch_size if self._batch_limit is None else min(self.batch_size, self._batch_limit)
        if self.device.type == "cpu":
            tokens = (size[0] // self.patch_size) * (size[1] // self.patch_size)
            step = min(step, max(1, CPU_BATCH_TOKENS // tokens))
        if free is not None:
            fit = int(free * MEMORY_SHARE // need)
            if fit < 1:
                raise InputError(f"not enough memory: a {size[1]}x{size[0]} network input needs about "
                                 f"{amount(need)}, {amount(free)} is free")
            step = min(step, fit)
        results: list[np.ndarray] = []
        while len(results) < len(images):
            done = len(results)
            chunk = images[done: done + step]
            try:
                output = self.run(self.prepare(chunk)).float()
                for i, target in enumerate(targets[done: done + step]):
                    values = self.resizing.resize_back(output[i: i + 1], target)[0]
                    if on_device is not None:
                        on_device(done + i, values)
                    results.append(values.cpu().numpy())
            except (MemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc):
                    raise
                self._release()
                if step == 1:
                    raise InputError(f"out of memory running a {size[1]}x{size[0]} network input "
                                     f"(about {amount(need)} estimated)") from None
                step //= 2
                self._batch_limit = step
        return results

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images of one network size as the normalised batch `run` takes, on `device`: resized on the CPU, or on a
        GPU after an asynchronous upload of their 8-bit pixels (`preprocess.prepare_on_device`)."""
        if self.device.type == "cuda":
            return prepare_on_device(images, self.resizing, self.device)
        return prepare_batch(images, self.resizing).to(self.device)

    def _release(self) -> None:
        """Give back what a failed allocation left behind."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def check_predictor_settings(input_size: int, patch_size: int, batch_size: int) -> None:
    """Refuse an input size below one patch and a batch size below 1."""
    if input_size < patch_size:
        raise UsageError(f"--input-size must be at least {patch_size}")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")


class DepthPredictor(BatchedPredictor):
    """A loaded PyTorch network with its input size (by default its pipeline's), device, precision and batch size.

    On CUDA the forward is replayed from captured CUDA graphs (`inference.graphs`; `graphs=False` runs it eagerly),
    and `capture_seconds` says how long capturing took.
    """

    def __init__(self, network: DepthNetwork, input_size: int | None = None, device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32, batch_size: int = 4, graphs: bool | None = None) -> None:
        input_size = input_size or network.config.default_input_size
        check_predictor_settings(input_size, network.config.patch_size, batch_size)
        self.device = device or torch.device("cpu")
        self.network = network.to(self.device).eval()
        self.input_size = input_size
        self.patch_size = network.config.patch_size
        self.dtype = dtype
        self.batch_size = batch_size
        self.output_kind, self.max_depth = network.config.output, network.config.max_depth
        self.resizing = resizing_of(network.config, input_size)
        self.bytes_per_token = activation_bytes_per_token(network.config)
        self.graphed: GraphedForward | None = None
        if graphs if graphs is not None else self.device.type == "cuda":
            self.graphed = GraphedForward(self.network, lambda: self._autocast(cache_enabled=False), batch_size)

    @property
    def capture_seconds(self) -> float:
        """Seconds spent capturing CUDA graphs so far (0 when the forward runs eagerly)."""
        return self.graphed.capture_seconds if self.graphed is not None else 0.0

    def _autocast(self, cache_enabled: bool = True):
        return autocast(self.device, self.dtype, network_dtype(self.network), cache_enabled)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's output for one batch, under inference mode and the predictor's autocast."""
        if self.graphed is not None:
            return self.graphed(batch)
        with torch.inference_mode(), self._autocast():
            return self.network(batch)
