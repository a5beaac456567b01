"""What `anydepth eval` is asked (EvalOptions, checked in one place) and the samples it plans to score from that,
before any network is loaded: a folder's, a list's, a named dataset's or the standard sets'."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from anydepth_cli.errors import UsageError
from anydepth_cli.evaluation.folder_run import check_alignment_mode
from anydepth_cli.evaluation.presets import check_depth_scale, get_preset

if TYPE_CHECKING:
    from anydepth_cli.datasets.archive import Sample, SetFiles
    from anydepth_cli.datasets.family import Family, SampleSet

ALIGN_MODES = ("scale-shift", "none")


@dataclass(frozen=True)
class EvalOptions:
    """What `anydepth eval` was asked to do (the command-line options)."""

    output: Path
    data: Path | None = None
    models: tuple[str, ...] = ()
    checkpoint: str | None = None
    arch: Path | None = None
    input_size: int | None = None
    benchmark: str | None = None
    """Comma-separated set names, or `all`: score the standard sets instead of `data`."""
    data_root: Path | None = None
    list_file: Path | None = None
    save_predictions: Path | None = None
    tile: str = "off"
    preset: str | None = None
    depth_scale: float | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 4
    align: str = "scale-shift"
    output_kind: str = "model"

    @property
    def unaligned(self) -> bool:
        """Whether metric models are also scored as they are (`--align none`)."""
        return self.align == "none"

    def check(self) -> None:
        """UsageError for the first option out of range or in conflict with another."""
        check_alignment_mode(self.output_kind)
        if self.align not in ALIGN_MODES:
            raise UsageError(f"--align must be scale-shift or none, not {self.align!r}")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.benchmark is not None:
            self._check_benchmarks(self.benchmark)
        else:
            self._check_folder()

    def _check_benchmarks(self, names: str) -> None:
        from anydepth_cli.datasets.registry import choose_benchmarks
        from anydepth_cli.evaluation.benchmark_run import TILE_MODES

        given = [name for name, value in (("DATA", self.data), ("--preset", self.preset),
                                          ("--depth-scale", self.depth_scale)) if value is not None]
        if given:
            raise UsageError(f"--benchmark reads the standard sets by their own protocols: drop {', '.join(given)}")
        sets = choose_benchmarks(names)
        if self.tile not in TILE_MODES:
            raise UsageError(f"--tile must be one of {', '.join(TILE_MODES)}, not {self.tile!r}")
        if self.output_kind == "auto":
            raise UsageError("--output-kind auto does not go with --benchmark: each model is scored in its declared "
                             "space, or in the one --output-kind depth|disparity names")
        if self.list_file is not None and len(sets) != 1:
            raise UsageError("--list is one set's filename list: name that one set with --benchmark")
        if self.data_root is None:
            raise UsageError("--benchmark needs --data-root DIR, the folder holding the sets")
        if not self.data_root.is_dir():
            raise UsageError(f"--data-root {self.data_root} is not a folder")

    def _check_folder(self) -> None:
        given = [name for name, value in (("--list", self.list_file), ("--save-predictions", self.save_predictions))
                 if value is not None]
        if self.tile != "off":
            given.append("--tile")
        if given:
            raise UsageError(f"{', '.join(given)}: only with --benchmark")
        if self.data is None:
            raise UsageError("give DATA (a folder or list file of image/depth pairs, or DATASET:PATH) or --benchmark "
                             "NAME --data-root DIR")
        get_preset(self.preset or "default")
        check_depth_scale(self.depth_scale)


@dataclass(frozen=True)
class PlannedSet:
    """A standard set to score: its family (name, protocol, layout), its files and the samples to score."""

    benchmark: Family
    files: SetFiles
    samples: list[Sample]


def benchmark_plan(options: EvalOptions) -> list[PlannedSet]:
    """Each set --benchmark names, its files under --data-root and the samples to score (those --list names, or
    every one with ground truth); a mistake in the data root is reported here, before any network is loaded."""
    from anydepth_cli.datasets.archive import locate
    from anydepth_cli.datasets.lists import read_list
    from anydepth_cli.datasets.registry import choose_benchmarks

    plan = []
    for family in choose_benchmarks(options.benchmark):
        files = locate(options.data_root, family.location)
        samples = (read_list(options.list_file, family).samples if options.list_file is not None
                   else family.find(files))
        plan.append(PlannedSet(family, files, samples))
    return plan


def folder_samples(data: Path, root: Path | None, depth_scale: float, scale_given: bool,
                   note: Callable[[str], None]) -> SampleSet:
    """The samples DATA names and their reader (the user's PNG depth divided by `depth_scale`); `note` gets what
    the source says about how it was read."""
    from anydepth_cli.datasets.registry import GENERIC, default_max_depth, open_source, parse_source

    spec = parse_source(str(data))
    if root is not None and not spec.path.is_file():
        raise UsageError("--data-root: only with --benchmark or a list file as DATA")
    if spec.dataset != GENERIC and scale_given:
        raise UsageError(f"{spec.dataset} ground truth has its own units: drop --depth-scale")
    opened = open_source(spec, root, depth_scale, cap=default_max_depth(spec.dataset))
    if opened.note:
        note(opened.note)
    return opened.data
