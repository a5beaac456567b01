"""Training data: the samples of several sources, checked and optionally quality-filtered, and augmented crops.

Every random choice of a sample (crop scale and position, flip, colour jitter) is drawn from a generator
seeded by (seed, epoch, sample index), and the order of an epoch is a permutation seeded by (seed, epoch):
the batches do not depend on the number of processes, data workers or where a run was resumed.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler

from anydepth_cli.errors import InputError
from anydepth_cli.datasets.files import read_mask, read_rgb
from anydepth_cli.datasets.generic import Pair, load_pairs, read_depth
from anydepth_cli.evaluation.quality import ScoreRow, score_array, select_keep
from anydepth_cli.inference.preprocess import MEAN, STD, to_float_rgb
from anydepth_cli.training.distributed import World

MAX_ZOOM = 1.5
"""Crops are taken after resizing the shorter side to between 1 and MAX_ZOOM times the crop side."""
JITTER = 0.1
"""Brightness, contrast and saturation are each scaled by a factor in [1 − JITTER, 1 + JITTER]."""
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_sources(sources: Sequence[Path]) -> list[Pair]:
    """The pairs of every source (a folder or a manifest, as `anydepth eval` reads them), in the order given."""
    return [pair for source in sources for pair in load_pairs(source)]


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header; InputError if it cannot be opened."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None


def _ground_truth(pair: Pair, depth_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth and validity (depth > 0, finite, inside the mask) of a pair; InputError for unreadable or misfitting files."""
    depth = read_depth(pair.depth, depth_scale)
    valid = depth > 0
    if pair.mask is not None:
        mask = read_mask(pair.mask)
        if mask.shape != depth.shape:
            raise InputError(f"{pair.mask}: mask is {mask.shape[1]}×{mask.shape[0]}, depth {depth.shape[1]}×{depth.shape[0]}")
        valid &= mask
    return depth, valid


@dataclass
class DataReport:
    """The samples to train on and those left out, with the reason."""

    samples: list[Pair]
    found: int
    no_valid: list[str] = field(default_factory=list)
    """Depth files without a valid pixel."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) of samples that could not be read or whose sizes disagree."""
    dropped: list[str] = field(default_factory=list)
    """Images left out by the quality filter (--keep)."""


def _check(pair: Pair, depth_scale: float, score: bool) -> tuple[str, str | ScoreRow | None]:
    """('ok', score row or None), ('empty', None) or ('unreadable', reason) for one sample."""
    try:
        depth, valid = _ground_truth(pair, depth_scale)
        size = _image_size(pair.image)
    except InputError as exc:
        return "unreadable", str(exc)
    if size != depth.shape:
        return "unreadable", (f"{pair.image}: image is {size[1]}×{size[0]}, depth {pair.depth.name} is "
                              f"{depth.shape[1]}×{depth.shape[0]}")
    if not valid.any():
        return "empty", None
    return "ok", (score_array(np.where(valid, depth, 0.0)) if score else None)


def scan(pairs: Sequence[Pair], depth_scale: float = 1000.0, keep: float | None = None, workers: int = 1,
         progress: Callable[[], None] | None = None) -> DataReport:
    """Read every sample's ground truth once: skip those without a valid pixel or unreadable, and with `keep`
    apply the data-quality filter of `anydepth score --keep` (DDS and GCS on the ground truth)."""
    report = DataReport([], len(pairs))
    rows: list[ScoreRow] = []
    usable: list[Pair] = []

    def check(pair: Pair) -> tuple[str, str | ScoreRow | None]:
        return _check(pair, depth_scale, keep is not None)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for pair, (status, detail) in zip(pairs, pool.map(check, pairs)):
            if progress is not None:
                progress()
            if status == "unreadable":
                report.unreadable.append((str(pair.image), str(detail)))
            elif status == "empty":
                report.no_valid.append(str(pair.depth))
            else:
                if isinstance(detail, ScoreRow):
                    rows.append(replace(detail, path=str(len(usable))))
                usable.append(pair)
    if keep is None:
        report.samples = usable
    else:
        kept = {int(index) for index in select_keep(rows, keep)}
        report.samples = [pair for i, pair in enumerate(usable) if i in kept]
        report.dropped = [str(pair.image) for i, pair in enumerate(usable) if i not in kept]
    return report


def augment(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, crop: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random crop×crop window of the sample at a random zoom, maybe mirrored, with light colour jitter.

    Returns the float32 RGB in [0, 1], the depth and the validity; depth and validity are resized with the
    nearest neighbour so that no invalid pixel leaks into a valid one.
    """
    zoom, top_at, left_at, flip = rng.uniform(1.0, MAX_ZOOM), rng.random(), rng.random(), rng.random() < 0.5
    brightness, contrast, saturation = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    height, width = depth.shape
    factor = crop * zoom / min(height, width)
    size = (max(crop, round(width * factor)), max(crop, round(height * factor)))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
    valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    top = math.floor(top_at * (size[1] - crop + 1))
    left = math.floor(left_at * (size[0] - crop + 1))
    window = (slice(top, top + crop), slice(left, left + crop))
    rgb, depth, valid = rgb[window], depth[window], valid[window]
    if flip:
        rgb, depth, valid = rgb[:, ::-1], depth[:, ::-1], valid[:, ::-1]
    x = to_float_rgb(np.ascontiguousarray(rgb)) * np.float32(brightness)
    x = (x - x.mean()) * np.float32(contrast) + x.mean()
    grey = (x @ GREY)[..., None]
    x = np.clip(grey + (x - grey) * np.float32(saturation), 0.0, 1.0)
    return x, np.ascontiguousarray(depth), np.ascontiguousarray(valid)


class TrainSet(Dataset):
    """Augmented training crops; item `(epoch, index)` is sample `index` as augmented in that epoch.

    An item is a dict of `image` (3, S, S) normalised, `target` (S, S) in the target space (depth, or
    disparity = 1/depth), `valid` (S, S) and `error` (empty, or why the sample could not be read, in which
    case it is all invalid and adds nothing to the loss).
    """

    def __init__(self, samples: Sequence[Pair], crop: int, target: str, seed: int, depth_scale: float = 1000.0) -> None:
        self.samples = list(samples)
        self.crop = crop
        self.target = target
        self.seed = seed
        self.depth_scale = depth_scale

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor | str]:
        epoch, index = key
        pair = self.samples[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        try:
            rgb = read_rgb(pair.image)
            depth, valid = _ground_truth(pair, self.depth_scale)
            if rgb.shape[:2] != depth.shape:
                raise InputError(f"{pair.image}: image and depth sizes differ")
        except InputError as exc:
            size = (self.crop, self.crop)
            return {"image": torch.zeros(3, *size), "target": torch.zeros(size), "valid": torch.zeros(size, dtype=torch.bool),
                    "error": str(exc)}
        image, depth, valid = augment(rgb, depth, valid, self.crop, rng)
        target = np.where(valid, depth if self.target == "depth" else 1.0 / np.where(valid, depth, 1.0), 0.0)
        image = ((image - MEAN) / STD).transpose(2, 0, 1)
        return {"image": torch.from_numpy(np.ascontiguousarray(image)), "target": torch.from_numpy(target.astype(np.float32)),
                "valid": torch.from_numpy(valid), "error": ""}


def batches_per_epoch(count: int, batch_size: int, world: World) -> int:
    """Batches each process gets per epoch (the tail that does not fill a batch on every process is left out)."""
    return count // world.size // batch_size


def epoch_batches(count: int, batch_size: int, world: World, epoch: int, seed: int) -> list[list[tuple[int, int]]]:
    """This process's batches of `epoch`: keys of TrainSet.

    The epoch's permutation is the same for any number of processes, and process r takes every world-size-th
    sample from r, so the k-th batches of all processes together are always the same global batch.
    """
    sampler = DistributedSampler(range(count), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    indices = list(sampler)
    usable = len(indices) // batch_size * batch_size
    return [[(epoch, i) for i in indices[start:start + batch_size]] for start in range(0, usable, batch_size)]


def batch_keys(count: int, batch_size: int, world: World, seed: int, start: int = 0) -> Iterator[list[tuple[int, int]]]:
    """This process's batches, epoch after epoch without end, from its `start`-th batch on."""
    per_epoch = batches_per_epoch(count, batch_size, world)
    epoch, offset = divmod(start, per_epoch)
    while True:
        yield from epoch_batches(count, batch_size, world, epoch, seed)[offset:]
        epoch, offset = epoch + 1, 0
