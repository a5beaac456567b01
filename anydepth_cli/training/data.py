"""Training batches: augmented crops of the checked samples, in an order drawn from the seed.

Every random choice of a sample (crop scale and position, flip, colour jitter) is drawn from a generator
seeded by (seed, epoch, position in the epoch), and the order of an epoch from one seeded by (seed, epoch):
a permutation of all samples, or with a --mix a draw of a dataset per position by its probability and of that
dataset's samples in permutation order. Each process takes every world-size-th position, so the batches do not
depend on the number of processes, data workers or where a run was resumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from anydepth_cli.datasets.archive import Sample
from anydepth_cli.datasets.family import Reader
from anydepth_cli.errors import InputError
from anydepth_cli.inference.preprocess import MEAN, STD, to_float_rgb
from anydepth_cli.training.distributed import World
from anydepth_cli.training.sources import DataReport

MAX_ZOOM = 1.5
"""Crops are taken after resizing the shorter side to between 1 and MAX_ZOOM times the crop side."""
JITTER = 0.1
"""Brightness, contrast and saturation are each scaled by a factor in [1 − JITTER, 1 + JITTER]."""
GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


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
    """Augmented training crops; item `(epoch, position, index)` is sample `index` as augmented at that position
    of that epoch.

    An item is a dict of `image` (3, S, S) normalised, `target` (S, S) in the target space (depth, metric
    depth in metres, or disparity = 1/depth), `valid` (S, S) and `error` (empty, or why the sample could not be read, in which
    case it is all invalid and adds nothing to the loss).
    """

    def __init__(self, samples: Sequence[Sample], readers: Sequence[Reader], crop: int, target: str, seed: int) -> None:
        self.samples = list(samples)
        self.readers = list(readers)
        self.crop = crop
        self.target = target
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor | str]:
        epoch, position, index = key
        sample, reader = self.samples[index], self.readers[index]
        rng = np.random.default_rng([self.seed, epoch, position])
        try:
            rgb = reader.rgb(sample)
            depth, valid = reader.truth(sample, rgb.shape[:2])
            if rgb.shape[:2] != depth.shape:
                raise InputError(f"{reader.where(sample.rgb)}: image and depth sizes differ")
        except InputError as exc:
            size = (self.crop, self.crop)
            return {"image": torch.zeros(3, *size), "target": torch.zeros(size), "valid": torch.zeros(size, dtype=torch.bool),
                    "error": str(exc)}
        image, depth, valid = augment(rgb, depth, valid, self.crop, rng)
        target = np.where(valid, depth if self.target != "disparity" else 1.0 / np.where(valid, depth, 1.0), 0.0)
        image = ((image - MEAN) / STD).transpose(2, 0, 1)
        return {"image": torch.from_numpy(np.ascontiguousarray(image)), "target": torch.from_numpy(target.astype(np.float32)),
                "valid": torch.from_numpy(valid), "error": ""}


@dataclass(frozen=True)
class Mix:
    """How an epoch draws its samples: `sizes` of the datasets (in sample order) and their probabilities
    (`weights`), or None for each sample once, in proportion to the sizes."""

    sizes: tuple[int, ...]
    weights: tuple[float, ...] | None = None

    @property
    def count(self) -> int:
        return sum(self.sizes)

    @classmethod
    def of(cls, report: DataReport) -> Mix:
        """The mix of a data report: its datasets' sizes and --mix probabilities."""
        sizes = report.groups()
        weights = None if report.weights is None else tuple(report.weights[name] for name in sizes)
        return cls(tuple(sizes.values()), weights)


def _cycled(size: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """`length` indices below `size`: permutations of them one after another."""
    rounds = -(-length // size)
    return np.concatenate([rng.permutation(size) for _ in range(rounds)])[:length] if length else np.zeros(0, np.int64)


def epoch_order(mix: Mix, epoch: int, seed: int) -> np.ndarray:
    """The sample indices of `epoch`, one per position, `mix.count` positions (see the module)."""
    if mix.weights is None:
        generator = torch.Generator().manual_seed(seed + epoch)  # the order DistributedSampler gives
        return torch.randperm(mix.count, generator=generator).numpy()
    rng = np.random.default_rng([seed, epoch])
    drawn = rng.choice(len(mix.sizes), size=mix.count, p=np.asarray(mix.weights) / sum(mix.weights))
    order = np.empty(mix.count, dtype=np.int64)
    start = 0
    for group, size in enumerate(mix.sizes):
        where = np.flatnonzero(drawn == group)
        order[where] = start + _cycled(size, len(where), np.random.default_rng([seed, epoch, group + 1]))
        start += size
    return order


def batches_per_epoch(count: int, batch_size: int, world: World) -> int:
    """Batches each process gets per epoch (the tail that does not fill a batch on every process is left out)."""
    return count // world.size // batch_size


def epoch_batches(mix: Mix, batch_size: int, world: World, epoch: int, seed: int) -> list[list[tuple[int, int, int]]]:
    """This process's batches of `epoch`: keys of TrainSet.

    The epoch's order is the same for any number of processes, and process r takes every world-size-th
    position from r, so the k-th batches of all processes together are always the same global batch.
    """
    order = epoch_order(mix, epoch, seed)
    positions = range(world.rank, mix.count // world.size * world.size, world.size)
    keys = [(epoch, position, int(order[position])) for position in positions]
    usable = len(keys) // batch_size * batch_size
    return [keys[start:start + batch_size] for start in range(0, usable, batch_size)]


def batch_keys(mix: Mix, batch_size: int, world: World, seed: int, start: int = 0) -> Iterator[list[tuple[int, int, int]]]:
    """This process's batches, epoch after epoch without end, from its `start`-th batch on."""
    per_epoch = batches_per_epoch(mix.count, batch_size, world)
    epoch, offset = divmod(start, per_epoch)
    while True:
        yield from epoch_batches(mix, batch_size, world, epoch, seed)[offset:]
        epoch, offset = epoch + 1, 0


def make_loader(report: DataReport, crop: int, target: str, seed: int, batch_size: int, world: World, start: int,
                workers: int, pin_memory: bool) -> DataLoader:
    """The batches of this process from its `start`-th on, read by `workers` processes."""
    dataset = TrainSet(report.samples, report.readers, crop, target, seed)
    return DataLoader(dataset, batch_sampler=batch_keys(Mix.of(report), batch_size, world, seed, start),
                      num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)
