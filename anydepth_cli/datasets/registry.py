"""Every dataset family by name, and the data arguments that name them.

A training or evaluation argument is `DATASET:PATH`, or a plain PATH of the user's own data (`generic`): PATH is a
folder or a plain tar in that dataset's own layout, or a list file (see `lists`). The five zero-shot benchmarks
are found under a data root at their standard places (`Family.location`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from anydepth_cli.datasets import (blendedmvs, diode, eth3d, generic, hypersim, irs, kitti, nyu, scannet, tartanair,
                                   vkitti)
from anydepth_cli.datasets.archive import FolderFiles
from anydepth_cli.datasets.family import Family, Reader, SampleSet, open_set
from anydepth_cli.datasets.lists import read_list
from anydepth_cli.errors import UsageError

GENERIC = generic.NAME
TRAINING: dict[str, Family] = {family.name: family for family in (
    hypersim.FAMILY, vkitti.FAMILY, irs.FAMILY, blendedmvs.FAMILY, tartanair.FAMILY)}
"""The paper's training sets."""
BENCHMARKS: dict[str, Family] = {family.name: family for family in (
    nyu.FAMILY, kitti.FAMILY, eth3d.FAMILY, scannet.FAMILY, diode.FAMILY)}
"""The zero-shot benchmarks, in the paper's order."""
DATASETS: tuple[str, ...] = (GENERIC, *TRAINING)
"""What a `DATASET:PATH` argument may name."""


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
            raise UsageError(f"{text!r}: give the {name} list file, folder or tar after the colon")
        return SourceSpec(name.lower(), Path(rest), text)
    if colon and name.isidentifier() and not Path(text).exists():
        raise UsageError(f"unknown dataset {name!r} in {text!r}: use one of {', '.join(DATASETS)}")
    return SourceSpec(GENERIC, Path(text), text)


def default_max_depth(dataset: str) -> float | None:
    """The dataset's usual training depth cap in metres (None: none)."""
    return TRAINING[dataset].max_depth if dataset in TRAINING else None


def family_of(dataset: str, depth_scale: float = 1000.0) -> Family:
    """The family of a DATASET name (generic data: PNG depth divided by `depth_scale`)."""
    return generic.family(depth_scale) if dataset == GENERIC else TRAINING[dataset]


@dataclass(frozen=True)
class OpenedSource:
    """A data argument's samples, their reader, and what was done to a list's paths (see `lists.SampleList.note`)."""

    data: SampleSet
    note: str | None = None


def open_source(spec: SourceSpec, root: Path | None = None, depth_scale: float = 1000.0,
                cap: float | None = None) -> OpenedSource:
    """The samples of a source (a folder or tar in its dataset's layout, or a list file relative to `root`, which
    also re-roots foreign absolute paths) and their reader, depth capped at `cap` metres (None or inf: no cap)."""
    family = family_of(spec.dataset, depth_scale)
    cap = None if cap is None or math.isinf(cap) else cap
    if spec.path.is_dir() or spec.path.suffix.lower() == ".tar" and spec.path.is_file():
        return OpenedSource(open_set(family, spec.path, cap))
    if spec.path.is_file():
        listed = read_list(spec.path, family, root)
        return OpenedSource(SampleSet(Reader(family, FolderFiles(listed.base), cap), listed.samples), listed.note)
    raise UsageError(f"{spec.text}: no such folder, tar or list file")


def choose_benchmarks(names: str) -> list[Family]:
    """The sets named in a comma-separated list (`all` for every one), in the order given; UsageError for an unknown or repeated name."""
    wanted = [name.strip().lower() for name in names.split(",") if name.strip()]
    if wanted == ["all"]:
        return list(BENCHMARKS.values())
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown or not wanted:
        raise UsageError(f"unknown benchmark {', '.join(unknown) or repr(names)}; choose from {', '.join(BENCHMARKS)} or all")
    if len(set(wanted)) < len(wanted):
        raise UsageError(f"--benchmark names a set twice: {names}")
    return [BENCHMARKS[name] for name in wanted]
