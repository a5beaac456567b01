"""Named sources: `DATASET:PATH`, a list file or a folder of one dataset, read the way its publisher defines.

DATASET is one of the families below or `generic` (the user's own data, the default when no name is given):
PATH is then a folder in that dataset's own layout or a list file (see `lists`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from anydepth_cli.datasets import blendedmvs, hypersim, irs, tartanair, vkitti
from anydepth_cli.datasets.files import read_bytes, read_mask
from anydepth_cli.datasets.generic import Pair, discover_pairs, read_depth
from anydepth_cli.datasets.lists import SampleList, read_list
from anydepth_cli.errors import InputError, UsageError

GENERIC = "generic"
FAMILIES: dict[str, ModuleType] = {module.NAME: module for module in (hypersim, vkitti, irs, blendedmvs, tartanair)}
DATASETS: tuple[str, ...] = (GENERIC, *FAMILIES)


@dataclass(frozen=True)
class SourceSpec:
    """A data argument: its dataset and its path (`text` as given)."""

    dataset: str
    path: Path
    text: str


def parse_source(text: str) -> SourceSpec:
    """`DATASET:PATH`, or a plain PATH of generic data; UsageError for an unknown dataset name."""
    name, colon, rest = text.partition(":")
    if colon and name.lower() in DATASETS:
        if not rest:
            raise UsageError(f"{text!r}: give the {name} list file or folder after the colon")
        return SourceSpec(name.lower(), Path(rest), text)
    if colon and name.isidentifier() and not Path(text).exists():
        raise UsageError(f"unknown dataset {name!r} in {text!r}: use one of {', '.join(DATASETS)}")
    return SourceSpec(GENERIC, Path(text), text)


def default_max_depth(dataset: str) -> float | None:
    """The dataset's usual training depth cap in metres (None: none)."""
    return FAMILIES[dataset].MAX_DEPTH if dataset in FAMILIES else None


@dataclass(frozen=True)
class GroundTruth:
    """How a source's ground truth reads: its dataset's decoder (generic: PNG values / `depth_scale`), then the
    sample's mask and the depth cap."""

    dataset: str = GENERIC
    depth_scale: float = 1000.0
    max_depth: float | None = None

    def decode(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Depth (float32, 0 where invalid) and validity of one depth file."""
        if self.dataset == GENERIC:
            depth = read_depth(path, self.depth_scale)
            return depth, depth > 0
        return FAMILIES[self.dataset].decode(read_bytes(path), str(path))

    def read(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """Depth and validity of a sample: decoded, inside its mask, not beyond the cap; InputError for
        unreadable or misfitting files."""
        depth, valid = self.decode(pair.depth)
        if pair.mask is not None:
            mask = read_mask(pair.mask)
            if mask.shape != depth.shape:
                raise InputError(f"{pair.mask}: mask is {mask.shape[1]}×{mask.shape[0]}, depth {depth.shape[1]}×{depth.shape[0]}")
            valid = valid & mask
        if self.max_depth is not None:
            valid = valid & (depth <= self.max_depth)
        return np.where(valid, depth, np.float32(0.0)), valid


def source_pairs(spec: SourceSpec, root: Path | None = None) -> SampleList:
    """The samples of a source: a folder in its dataset's layout, or a list file (relative to `root`, which
    also re-roots foreign absolute paths)."""
    if spec.path.is_dir():
        pairs = discover_pairs(spec.path) if spec.dataset == GENERIC else FAMILIES[spec.dataset].find(spec.path)
        return SampleList(pairs)
    if spec.path.is_file():
        return read_list(spec.path, root)
    raise UsageError(f"{spec.text}: no such folder or list file")


def open_source(spec: SourceSpec, root: Path | None = None, depth_scale: float = 1000.0,
                cap: float | None = None) -> tuple[SampleList, GroundTruth]:
    """The samples of a source (see `source_pairs`) and how its ground truth reads, depth capped at `cap` metres
    (None or inf: no cap)."""
    truth = GroundTruth(spec.dataset, depth_scale, None if cap is None or math.isinf(cap) else cap)
    return source_pairs(spec, root), truth
