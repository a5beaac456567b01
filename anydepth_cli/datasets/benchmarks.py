"""The standard zero-shot evaluation sets (NYUv2, KITTI, ETH3D, ScanNet, DIODE) by name, and their samples.

Each set's module (`nyu`, `kitti`, `eth3d`, `scannet`, `diode`) gives its `NAME`, `TITLE`, standard
`LOCATION` under a data root, `STANDARD_COUNT` of scored images, `NAMING` rule, `ground_truth` decoder and
`sample_from_line` for its standard filename list.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from anydepth_cli.datasets import diode, eth3d, kitti, nyu, scannet
from anydepth_cli.datasets.archive import Sample, SetFiles, read_filename_list
from anydepth_cli.errors import InputError, UsageError

BENCHMARKS: dict[str, ModuleType] = {module.NAME: module for module in (nyu, kitti, eth3d, scannet, diode)}
"""The sets in the paper's order."""


def choose_benchmarks(names: str) -> list[ModuleType]:
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


def listed_samples(benchmark: ModuleType, path: Path) -> list[Sample]:
    """The samples a standard filename list names, those without ground truth left out."""
    samples = []
    for number, fields in read_filename_list(path):
        try:
            sample = benchmark.sample_from_line(fields)
        except InputError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        if sample is not None:
            samples.append(sample)
    if not samples:
        raise UsageError(f"filename list {path} names no sample with ground truth")
    return samples


def find_samples(benchmark: ModuleType, files: SetFiles) -> list[Sample]:
    """Every sample with ground truth in `files` by the set's naming rule; UsageError when there is none."""
    samples = benchmark.NAMING.samples(files.names())
    if not samples:
        raise UsageError(f"no {benchmark.TITLE} sample in {files.root}: is it {benchmark.LOCATION} or its extracted contents?")
    return samples
