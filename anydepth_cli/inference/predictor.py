"""The predictor: RGB images in, maps of the model's own quantity (depth or disparity) at each image's size out."""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from typing import Protocol, Sequence

import numpy as np
import torch

from anydepth_cli.errors import UsageError
from anydepth_cli.inference.preprocess import network_size, prepare_batch, resize_output
from anydepth_cli.models.network import DepthNetwork

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


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


def select_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` is bf16 on GPUs that support it, fp16 on other GPUs, fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class BatchedPredictor:
    """A MapPredictor over any runtime: groups images by network size, prepares the batches and resizes the outputs;
    a subclass runs its network on one prepared batch (`run`)."""

    input_size: int
    output_kind: str
    patch_size: int
    batch_size: int
    device: torch.device

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's output (B, 1, h, w) for one normalised batch (B, 3, H, W) on `device`."""
        raise NotImplementedError

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The model's quantity (float32 H×W, `output_kind`) for each RGB image, at that image's size."""
        multiple = self.patch_size
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[network_size(*image.shape[:2], self.input_size, multiple)].append(index)
        results: list[np.ndarray | None] = [None] * len(images)
        for size, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start: start + self.batch_size]
                batch = prepare_batch([images[i] for i in chunk], size).to(self.device, non_blocking=True)
                output = self.run(batch)
                for i, index in enumerate(chunk):
                    height, width = images[index].shape[:2]
                    results[index] = resize_output(output[i: i + 1], (height, width))[0].cpu().numpy()
        return results


def check_predictor_settings(input_size: int, patch_size: int, batch_size: int) -> None:
    """Refuse an input size below one patch and a batch size below 1."""
    if input_size < patch_size:
        raise UsageError(f"--input-size must be at least {patch_size}")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")


class DepthPredictor(BatchedPredictor):
    """A loaded PyTorch network with its input size, device, precision and batch size."""

    def __init__(self, network: DepthNetwork, input_size: int = 518, device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32, batch_size: int = 4) -> None:
        check_predictor_settings(input_size, network.config.patch_size, batch_size)
        self.device = device or torch.device("cpu")
        self.network = network.to(self.device).eval()
        self.input_size = input_size
        self.patch_size = network.config.patch_size
        self.dtype = dtype
        self.batch_size = batch_size
        self.output_kind = network.config.output

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's output for one batch, under inference mode and the predictor's autocast."""
        with torch.inference_mode(), self._autocast():
            return self.network(batch)
