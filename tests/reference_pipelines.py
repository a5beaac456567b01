"""Each model family's published single-image inference, written out here from the authors' code's behaviour and
independent of anydepth_cli's preprocessing, so tests can hold the whole pipeline (resize in, network, resize back)
against it. The network is the only shared part: its parity with the references is tested on its own.

Depth Anything V2, `DepthAnythingV2.infer_image(raw_image, input_size)` (depth_anything_v2/dpt.py, util/transform.py):
the BGR photo /255 in float64; `Resize(keep_aspect_ratio, ensure_multiple_of=14, resize_method="lower_bound")`: the
larger of input_size/h and input_size/w scales both sides, each rounded to the nearest multiple of 14 and rounded up
instead when that is below input_size; cv2.INTER_CUBIC; ImageNet mean/std; float32; the network; the map back to
(h, w) with F.interpolate(bilinear, align_corners=True).

Depth Anything 3, `InputProcessor` with process_res_method "upper_bound_resize" (utils/io/input_processor.py): the
photo as an 8-bit PIL image; the longer side to process_res (sides int(round(side * scale)), at least 1), with
cv2.INTER_CUBIC when that enlarges and cv2.INTER_AREA otherwise, skipped when the longer side already is process_res;
then each side to the nearest multiple of 14 (the larger at a tie), with INTER_CUBIC when either side grows and
INTER_AREA otherwise, skipped when nothing changes; both resizes on the 8-bit pixels; ToTensor (/255) and Normalize.
Depth Anything 3 returns the map at the network's resolution.

VGGT, `load_and_preprocess_images(paths, mode="crop")` (vggt/utils/load_fn.py) and the aggregator's normalisation: the
photo as a PIL image; width 518 (`target_size`, fixed there), height `round(height * (518 / width) / 14) * 14`;
`img.resize((518, new_height), Image.Resampling.BICUBIC)`; ToTensor (8-bit / 255); rows `(new_height - 518) // 2`
onwards, 518 of them, kept when new_height > 518; then `(images - mean) / std` with ImageNet's statistics inside the
aggregator. VGGT returns maps at the network's resolution; anydepth declares the map back as Depth Anything V2's.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _run(network: torch.nn.Module, chw: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return network(torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))[None]).float()


def dav2_infer_image(network: torch.nn.Module, rgb: np.ndarray, input_size: int = 518, patch: int = 14) -> np.ndarray:
    """Depth Anything V2's `infer_image` on an 8-bit RGB photo: the map at the photo's size."""
    height, width = rgb.shape[:2]
    scale = max(input_size / height, input_size / width)

    def side(length: int) -> int:
        target = scale * length
        rounded = int(np.round(target / patch) * patch)
        return rounded if rounded >= input_size else int(np.ceil(target / patch) * patch)

    image = cv2.resize(rgb / 255.0, (side(width), side(height)), interpolation=cv2.INTER_CUBIC)
    image = (image - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    output = _run(network, image.transpose(2, 0, 1))
    return F.interpolate(output, (height, width), mode="bilinear", align_corners=True)[0, 0].numpy()


def _da3_step(image: Image.Image, size: tuple[int, int], enlarge: bool) -> Image.Image:
    resized = cv2.resize(np.asarray(image), size, interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA)
    return Image.fromarray(resized)


def da3_network_map(network: torch.nn.Module, rgb: np.ndarray, process_res: int = 504,
                    patch: int = 14) -> torch.Tensor:
    """Depth Anything 3's input processing and the network on an 8-bit RGB photo: the map (1, 1, h, w) at the
    network's resolution, as Depth Anything 3 returns it."""
    image = Image.fromarray(rgb).convert("RGB")
    width, height = image.size
    if max(width, height) != process_res:
        scale = process_res / float(max(width, height))
        size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        image = _da3_step(image, size, enlarge=scale > 1.0)
    width, height = image.size

    def nearest(length: int) -> int:
        below = length // patch * patch
        return below + patch if below + patch - length <= length - below else below

    size = (max(1, nearest(width)), max(1, nearest(height)))
    if size != (width, height):
        image = _da3_step(image, size, enlarge=size[0] > width or size[1] > height)
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)
    tensor = (tensor - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return _run(network, tensor.numpy())


def da3_inference(network: torch.nn.Module, rgb: np.ndarray, process_res: int = 504, patch: int = 14,
                  size: tuple[int, int] | None = None) -> np.ndarray:
    """Depth Anything 3's map brought to the photo's size (or `size`) the way anydepth declares for the family,
    since Depth Anything 3 publishes none: bilinear on pixel centres (align_corners=False)."""
    output = da3_network_map(network, rgb, process_res, patch)
    target = size or rgb.shape[:2]
    return F.interpolate(output, target, mode="bilinear", align_corners=False)[0, 0].numpy()


def vggt_network_input(rgb: np.ndarray, target_size: int = 518, patch: int = 14, crop: bool = True) -> torch.Tensor:
    """VGGT's `crop`-mode preprocessing of an 8-bit RGB photo, normalised: (1, 3, H, W); with `crop` False, the
    photo's rows all kept (the only step anydepth leaves out)."""
    image = Image.fromarray(rgb).convert("RGB")
    width, height = image.size
    new_height = round(height * (target_size / width) / patch) * patch
    image = image.resize((target_size, new_height), Image.Resampling.BICUBIC)
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
    if crop and new_height > target_size:
        start = (new_height - target_size) // 2
        tensor = tensor[:, start:start + target_size, :]
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return ((tensor - mean) / std)[None]


def vggt_inference(network: torch.nn.Module, rgb: np.ndarray, target_size: int = 518, patch: int = 14) -> np.ndarray:
    """VGGT's preprocessing (uncropped) and the network, the map brought to the photo's size as anydepth declares for
    the family (Depth Anything V2's: bilinear, align_corners=True)."""
    output = _run(network, vggt_network_input(rgb, target_size, patch, crop=False)[0].numpy())
    return F.interpolate(output, rgb.shape[:2], mode="bilinear", align_corners=True)[0, 0].numpy()


def published_inference(resize: str, network: torch.nn.Module, rgb: np.ndarray, input_size: int, patch: int,
                        size: tuple[int, int] | None = None) -> np.ndarray:
    """The map of the family a network's `resize` names, at the photo's size (or `size`, Depth Anything 3 only)."""
    if resize == "da3":
        return da3_inference(network, rgb, input_size, patch, size)
    assert size is None, "Depth Anything V2's infer_image and VGGT bring maps to the photo's size only"
    if resize == "vggt":
        return vggt_inference(network, rgb, input_size, patch)
    return dav2_infer_image(network, rgb, input_size, patch)


AGREEMENT = 1e-4
"""Largest |ours − reference| accepted, as a share of the reference map's range."""
SIZES = [(900, 333), (757, 1003), (301, 97), (480, 640), (45, 61)]
"""(height, width): thin portrait, odd landscape, thin and small, a plain 4:3 photo, one smaller than the input."""


def awkward_photos(sample_photo: Path) -> list[np.ndarray]:
    """The sample photo at each of SIZES (8-bit RGB)."""
    rgb = cv2.cvtColor(cv2.imread(str(sample_photo)), cv2.COLOR_BGR2RGB)
    return [cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA) for height, width in SIZES]


def assert_agrees(ours: np.ndarray, reference: np.ndarray, floor: float) -> None:
    """Same shape, within AGREEMENT of the reference's range, and a reference that varies (no degenerate match)."""
    assert ours.shape == reference.shape
    spread = float(reference.max() - reference.min())
    assert spread > 0.05 * float(np.abs(reference).mean()), "the reference map is (nearly) constant"
    assert np.mean(reference <= floor + 1e-6) < 0.01, "the reference map sits at the activation's floor"
    assert float(np.abs(ours - reference).max()) <= AGREEMENT * spread
