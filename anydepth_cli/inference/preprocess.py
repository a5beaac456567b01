"""Images → normalised network input, and network output → a map at the image's size, as each model family's
published inference does it (`RESIZINGS`, chosen by the network's declared `resize`)."""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anydepth_cli.models.config import NetworkConfig

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
    return within_token_cap(network_size(height, width, input_size, multiple), height, width, input_size, multiple)


def within_token_cap(size: tuple[int, int], height: int, width: int, input_size: int,
                     multiple: int) -> tuple[int, int]:
    """`size` (a family's network input size of an image) when it holds at most `token_cap` patches, else the
    largest size within the cap with the image's aspect ratio, each side a whole number (at least one) of patches."""
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


class Resizing:
    """One model family's published resizing at an input size, for a patch size: the network input size of an image
    (`network_size`), the image resized to it (`resize_image`) and the network's map brought back (`resize_back`)."""

    name: ClassVar[str]
    """Its key in `models.config.RESIZES`, which says what it does."""

    def __init__(self, input_size: int, patch: int) -> None:
        self.input_size = input_size
        self.patch = patch

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input size (height, width) of an image of this size."""
        raise NotImplementedError

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        """An RGB image (uint8, or float32 in [0, 1]) at `network_size`, float32 in [0, 1]."""
        raise NotImplementedError

    def resize_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """`resize_image` on the device: an RGB image tensor (H, W, 3; uint8, or float in [0, 1]) at `network_size`,
        (3, h, w) float32 in [0, 1]. The same resampling in float arithmetic: equal to `resize_image` to float
        rounding for float images, within one 8-bit level where that rounds 8-bit steps."""
        raise NotImplementedError

    @staticmethod
    def resize_back(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """A network map (B, 1, h, w) at `size`: (B, H, W), in the map's dtype, differentiable."""
        raise NotImplementedError


def _bilinear(output: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(output.shape[-2:]) != tuple(size):
        output = F.interpolate(output, size=size, mode="bilinear", align_corners=align_corners)
    return output[:, 0]


class DAv2Resizing(Resizing):
    """Depth Anything V2's `infer_image`; images longer than 4:1 scaled down to the token cap."""

    name = "dav2"

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return capped_network_size(height, width, self.input_size, self.patch)

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        height, width = self.network_size(*image.shape[:2])
        return cv2.resize(to_float_rgb(image), (width, height), interpolation=cv2.INTER_CUBIC)

    def resize_tensor(self, image: torch.Tensor) -> torch.Tensor:
        return _cubic(_channels_first(image) / _levels(image), self.network_size(*image.shape[:2]))

    @staticmethod
    def resize_back(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return _bilinear(output, size, align_corners=True)


class DA3Resizing(Resizing):
    """Depth Anything 3's input processor (`upper_bound_resize`), at least one patch a side; the map back bilinear on
    pixel centres, since Depth Anything 3 returns maps at the network's resolution."""

    name = "da3"

    def _scaled(self, height: int, width: int) -> tuple[int, int]:
        """The first step's size: the longer side at the input size."""
        longest = max(height, width)
        if longest == self.input_size:
            return height, width
        scale = self.input_size / longest
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _multiple(self, length: int) -> int:
        """The nearest multiple of the patch (the larger one at a tie), at least one patch."""
        down = length // self.patch * self.patch
        up = down + self.patch
        return max(self.patch, up if up - length <= length - down else down)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        scaled = self._scaled(height, width)
        return self._multiple(scaled[0]), self._multiple(scaled[1])

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        scaled = self._scaled(height, width)
        image = _resize_step(image, scaled, enlarge=max(scaled) > max(height, width))
        final = self.network_size(height, width)
        image = _resize_step(image, final, enlarge=final[0] > scaled[0] or final[1] > scaled[1])
        return to_float_rgb(image)

    def resize_tensor(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[:2]
        levels = _levels(image)
        scaled = self._scaled(height, width)
        final = self.network_size(height, width)
        x = _channels_first(image)
        for size, enlarge in ((scaled, max(scaled) > max(height, width)),
                              (final, final[0] > scaled[0] or final[1] > scaled[1])):
            if tuple(x.shape[-2:]) != tuple(size):
                x = _cubic(x, size) if enlarge else _area(x, size)
                if levels != 1.0:  # 8-bit pixels stay 8-bit between steps, as cv2 keeps them
                    x = x.round().clamp_(0, 255)
        return x / levels

    @staticmethod
    def resize_back(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return _bilinear(output, size, align_corners=False)


class VGGTResizing(Resizing):
    """VGGT's `load_and_preprocess_images` without its crop: the width to the input size, the height scaled with it
    and rounded to the nearest multiple of the patch (Python's rounding, as VGGT computes it; at least one patch),
    Pillow's bicubic resampling, the 8-bit pixels divided by 255; images longer than 4:1 scaled down to the token cap.
    VGGT's default `crop` mode then keeps only the middle 518 rows of a photo taller than that: here the whole photo
    goes in, since a depth map must cover every pixel. The map back is Depth Anything V2's."""

    name = "vggt"

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        new_width = max(self.patch, round(self.input_size / self.patch) * self.patch)
        new_height = max(self.patch, round(height * (new_width / width) / self.patch) * self.patch)
        return within_token_cap((new_height, new_width), height, width, self.input_size, self.patch)

    def resize_image(self, image: np.ndarray) -> np.ndarray:
        height, width = self.network_size(*image.shape[:2])
        if image.dtype == np.uint8:
            resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
            return resized.astype(np.float32) / np.float32(255)
        channels = [Image.fromarray(to_float_rgb(image)[..., c]).resize((width, height), Image.Resampling.BICUBIC)
                    for c in range(3)]
        return np.stack([np.asarray(c) for c in channels], axis=-1)

    def resize_tensor(self, image: torch.Tensor) -> torch.Tensor:
        levels = _levels(image)
        size = self.network_size(*image.shape[:2])
        # Pillow's bicubic is Keys' a = -0.5 widened when shrinking, which is torch's antialiased bicubic.
        x = F.interpolate(_channels_first(image)[None], size=size, mode="bicubic", align_corners=False, antialias=True)[0]
        if levels != 1.0:  # Pillow rounds 8-bit pixels back to 8 bits
            x = x.round().clamp_(0, 255)
        return x / levels

    @staticmethod
    def resize_back(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return _bilinear(output, size, align_corners=True)


def _resize_step(image: np.ndarray, size: tuple[int, int], enlarge: bool) -> np.ndarray:
    """`image` at `size` (its own dtype): bicubic to enlarge, area averaging to shrink, untouched when the size holds."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA)


def _channels_first(image: torch.Tensor) -> torch.Tensor:
    return image.permute(2, 0, 1).float()


def _levels(image: torch.Tensor) -> float:
    return 255.0 if image.dtype == torch.uint8 else 1.0


def _cubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2's INTER_CUBIC (a = -0.75, pixel centres, edges replicated, no antialiasing) of a (C, H, W) float tensor."""
    return F.interpolate(x[None], size=tuple(size), mode="bicubic", align_corners=False)[0]


def _area_weights(length: int, size: int, device: torch.device) -> torch.Tensor:
    """(size, length) weights of cv2's INTER_AREA along one axis when shrinking: each output pixel is the mean of the
    input it covers, partly covered pixels weighted by the part covered."""
    scale = length / size
    edges = torch.arange(size + 1, dtype=torch.float64) * scale
    pixels = torch.arange(length, dtype=torch.float64)
    covered = (torch.minimum(edges[1:, None], pixels[None] + 1) - torch.maximum(edges[:-1, None], pixels[None]))
    return (covered.clamp_(min=0) / scale).float().to(device)


def _area(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2's INTER_AREA of a (C, H, W) float tensor shrunk (or kept) to `size` on each axis."""
    rows = _area_weights(x.shape[-2], size[0], x.device)
    cols = _area_weights(x.shape[-1], size[1], x.device)
    return rows @ x @ cols.T


def prepare_on_device(images: Sequence[np.ndarray], resizing: Resizing, device: torch.device) -> torch.Tensor:
    """`prepare_batch` with the resizing and normalising done on `device` (a GPU): each image goes up as it is
    (8 bits a channel) from pinned memory, without waiting, and comes out a normalised (B, 3, H, W) batch."""
    mean = torch.tensor(MEAN, device=device)[:, None, None]
    std = torch.tensor(STD, device=device)[:, None, None]
    resized = []
    for image in images:
        host = torch.from_numpy(np.ascontiguousarray(image))
        if device.type == "cuda":
            host = host.pin_memory()
        resized.append(resizing.resize_tensor(host.to(device, non_blocking=True)))
    return (torch.stack(resized) - mean) / std


RESIZINGS: dict[str, type[Resizing]] = {kind.name: kind for kind in (DAv2Resizing, DA3Resizing, VGGTResizing)}
"""The pipelines a network's `resize` names (`models.config.RESIZES`)."""


def resizing_of(config: NetworkConfig, input_size: int) -> Resizing:
    """The resizing the network declares (`config.resize`), at `input_size`."""
    return RESIZINGS[config.resize](input_size, config.patch_size)


def resize_map(output: torch.Tensor, size: tuple[int, int], config: NetworkConfig) -> torch.Tensor:
    """A network map (B, 1, h, w) brought to `size` as the network's pipeline does (`config.resize`): (B, H, W), in
    the map's dtype, differentiable (for a training loss against targets of another size)."""
    return RESIZINGS[config.resize].resize_back(output, size)


def prepare_batch(images: Sequence[np.ndarray], resizing: Resizing) -> torch.Tensor:
    """Each RGB image resized by `resizing` (all to one network size) and normalised with ImageNet statistics:
    (B, 3, H, W)."""
    batch = np.empty((len(images), 3, *resizing.network_size(*images[0].shape[:2])), dtype=np.float32)
    for i, image in enumerate(images):
        batch[i] = ((resizing.resize_image(image) - MEAN) / STD).transpose(2, 0, 1)
    return torch.from_numpy(batch)
