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

TOKEN_CAP_FACTOR = 4
"""The network input never holds more patches than this many times a square input's
(37 × 37 at 518 px for patch 14, 32 × 32 at 512 px for patch 16): photos up to 4:1 keep the
reference preprocessing, longer or thinner ones are scaled down to fit (`capped_network_size`)."""


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


def token_cap(input_size: int, multiple: int) -> int:
    """The most patches a network input may hold: `TOKEN_CAP_FACTOR` times a square input's."""
    return TOKEN_CAP_FACTOR * math.ceil(input_size / multiple) ** 2


def capped_network_size(height: int, width: int, input_size: int, multiple: int) -> tuple[int, int]:
    """The network input size of an image: `network_size` (the reference preprocessing) when that
    holds at most `token_cap` patches, else the largest size within the cap with the image's
    aspect ratio, each side a whole number (at least one) of patches.

    A side shorter than one patch at that scale is stretched to one patch rather than padded:
    padding would add a border the network reads as a depth edge.
    """
    size = network_size(height, width, input_size, multiple)
    cap = token_cap(input_size, multiple)
    if (size[0] // multiple) * (size[1] // multiple) <= cap:
        return size
    per_pixel = math.sqrt(cap / (height * width))
    short, long = sorted((height, width))
    short_patches = max(1, math.floor(short * per_pixel))
    long_patches = max(1, min(math.floor(long * per_pixel), cap // short_patches))
    if height <= width:
        return short_patches * multiple, long_patches * multiple
    return long_patches * multiple, short_patches * multiple


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
