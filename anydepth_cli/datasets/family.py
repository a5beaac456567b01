"""A dataset family, declared once: how its files are named, how its depth decodes, its defaults; and the reader
of one set of it.

Every dataset, the paper's training sets, the five benchmarks and the user's own folders alike, is a `Family`:
its samples are found by its naming rules over a folder or a tar (`archive`), listed by the one list reader
(`lists`), and decoded by its `decode` to depth in metres with a validity mask. A `Reader` reads one set's
samples: photo, ground truth inside the sample's mask and under the depth cap.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from anydepth_cli.datasets.archive import Naming, Sample, SetFiles, open_files
from anydepth_cli.datasets.files import decode_mask, decode_rgb
from anydepth_cli.errors import InputError, UsageError

Decoder = Callable[[bytes, str, "tuple[int, int] | None"], tuple[np.ndarray, np.ndarray]]
"""(depth file's bytes, its name, the photo's (rows, columns) where known) → depth in metres (float32) and where it
is valid."""


def rgb_depth_mask(fields: list[str]) -> Sample | None:
    """`RGB DEPTH [MASK]`."""
    return Sample(*fields[:3])


def rgb_depth(fields: list[str]) -> Sample | None:
    """`RGB DEPTH [...]`: columns past the second are not the sample's."""
    return Sample(fields[0], fields[1])


@dataclass(frozen=True)
class Family:
    """One dataset family (see the module)."""

    name: str
    """Its key: `DATASET:PATH`, --mix, --max-depth, --benchmark."""
    title: str
    naming: tuple[Naming, ...]
    """The rules that find its samples among a set's files."""
    decode: Decoder
    layout: str
    """The files its naming expects, for the message when none is found."""
    max_depth: float | None = None
    """The default depth cap in metres (None: none)."""
    columns: str = "RGB DEPTH [MASK]"
    """A line of its list files."""
    from_line: Callable[[list[str]], Sample | None] = rgb_depth_mask
    """The sample of a list line's fields (None: one without ground truth, left out); InputError for a bad line."""
    location: str | None = None
    """Benchmarks: its standard place under a data root."""
    standard_count: int | None = None
    """Benchmarks: the number of images the field scores."""
    noun: str = "samples"

    def find(self, files: SetFiles) -> list[Sample]:
        """Every sample in `files` by the family's naming, sorted by photo; UsageError when there is none."""
        names = files.names()
        samples = sorted({sample for rule in self.naming for sample in rule.samples(names)},
                         key=lambda sample: PurePosixPath(sample.rgb))
        if not samples:
            raise UsageError(f"no {self.title} {self.noun} in {files.root}: expected {self.layout}")
        return samples


@dataclass(frozen=True)
class Reader:
    """How one set's samples read: its family's decoder over its files, inside each sample's mask and not beyond
    `cap` metres."""

    family: Family
    files: SetFiles
    cap: float | None = None

    def where(self, name: str) -> str:
        """A file of the set as the user finds it."""
        return self.files.where(name)

    def rgb(self, sample: Sample) -> np.ndarray:
        """The photo as RGB uint8 H×W×3, its pixel grid as stored."""
        return decode_rgb(self.files.read(sample.rgb), self.where(sample.rgb))

    def image_size(self, sample: Sample) -> tuple[int, int]:
        """(rows, columns) of the photo, from its header."""
        try:
            with Image.open(io.BytesIO(self.files.read(sample.rgb))) as image:
                return image.height, image.width
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(f"cannot read image {self.where(sample.rgb)}: {exc}") from None

    def truth(self, sample: Sample, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Depth in metres (float32, 0 where invalid) and validity of a sample whose photo is `image_size` (needed
        by a format without its own size: ETH3D's): decoded, inside its mask, not beyond the cap; InputError for
        unreadable or misfitting files."""
        depth, valid = self.family.decode(self.files.read(sample.depth), self.where(sample.depth), image_size)
        if sample.mask is not None:
            mask = decode_mask(self.files.read(sample.mask), self.where(sample.mask))
            if mask.shape != depth.shape:
                raise InputError(f"{self.where(sample.mask)}: mask is {mask.shape[1]}×{mask.shape[0]}, "
                                 f"depth {depth.shape[1]}×{depth.shape[0]}")
            valid = valid & mask
        if self.cap is not None:
            valid = valid & (depth <= self.cap)
        return np.where(valid, depth, np.float32(0.0)), valid


@dataclass(frozen=True)
class SampleSet:
    """Samples and the reader of their set."""

    reader: Reader
    samples: Sequence[Sample]

    def __len__(self) -> int:
        return len(self.samples)


def open_set(family: Family, path: Path, cap: float | None = None) -> SampleSet:
    """The samples of `family` in the folder or tar `path`, and their reader (depth capped at `cap` metres)."""
    files = open_files(path)
    return SampleSet(Reader(family, files, cap), family.find(files))
