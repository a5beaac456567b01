"""Images → normalised network input, and network output → a map at the image's size."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def network_size(height: int, width: int, input_size: int, multiple: int) -> tuple[int, int]:
    """Network input size keeping the aspect ratio: shorter side about `input_size`, sides multiples of `multiple`."""
    scale = input_size / min(height, width)

    def side(length: int) -> int:
        target = scale * length
        rounded = round(target / multiple) * multiple
        if rounded < input_size:
            rounded = math.ceil(target / multiple) * multiple
        return max(rounded, multiple)

    return side(height), side(width)


def to_float_rgb(image: np.ndarray) -> np.ndarray:
    """RGB image as float32 in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    return image.astype(np.float32, copy=False)


def prepare_batch(images: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """Resize (bicubic) each RGB image to `size` and normalise with ImageNet statistics: (B, 3, H, W)."""
    height, width = size
    batch = np.empty((len(images), 3, height, width), dtype=np.float32)
    for i, image in enumerate(images):
        resized = cv2.resize(to_float_rgb(image), (width, height), interpolation=cv2.INTER_CUBIC)
        batch[i] = ((resized - MEAN) / STD).transpose(2, 0, 1)
    return torch.from_numpy(batch)


def resize_output(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Head output (B, 1, h, w) → (B, H, W) float32 at `size`, bilinear."""
    output = output.float()
    if tuple(output.shape[-2:]) != tuple(size):
        output = F.interpolate(output, size=size, mode="bilinear", align_corners=False)
    return output[:, 0]
