"""The training sources: each data argument's samples, checked once, quality-filtered within the source, and the
probability with which the batches draw each dataset.

Rank 0 reads and checks the data; every process gets its result (or its error), so they all train on the same
samples and stop together on a bad argument.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Callable, Protocol, Sequence

import numpy as np

from anydepth_cli.datasets.archive import Sample
from anydepth_cli.datasets.family import Reader, SampleSet
from anydepth_cli.datasets.registry import DATASETS, SourceSpec, default_max_depth, open_source, parse_source
from anydepth_cli.errors import AnyDepthError, InputError, UsageError
from anydepth_cli.evaluation.quality import ScoreRow, score_array, select_keep
from anydepth_cli.io.writers import write_lines
from anydepth_cli.training import distributed, run
from anydepth_cli.training.distributed import World

class DataReporter(Protocol):
    """What the data check tells its user (`training.report.Reporter` does)."""

    def note(self, message: str) -> None: ...

    def scanning(self, total: int) -> None: ...

    def scanned(self) -> None: ...

    def data(self, report: DataReport) -> None: ...


@dataclass
class Source:
    """One data argument: its samples and, once checked, those left out and why."""

    label: str
    """The argument as given."""
    name: str
    """Its dataset: the key of --mix and --max-depth."""
    reader: Reader
    samples: list[Sample]
    found: int = 0
    no_valid: list[str] = field(default_factory=list)
    """Depth files without a valid pixel."""
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) of samples that could not be read or whose sizes disagree."""
    dropped: list[str] = field(default_factory=list)
    """Images left out by the quality filter (--keep)."""

    @property
    def data(self) -> SampleSet:
        return SampleSet(self.reader, self.samples)


@dataclass
class DataReport:
    """The sources to train on, in sample order (those of one dataset next to each other), and the --mix."""

    sources: list[Source]
    weights: dict[str, float] | None = None
    """Probability of each dataset per draw; None: in proportion to their sizes (each sample once an epoch)."""

    @property
    def samples(self) -> list[Sample]:
        return [sample for source in self.sources for sample in source.samples]

    @property
    def readers(self) -> list[Reader]:
        """The reader of each sample."""
        return [source.reader for source in self.sources for _ in source.samples]

    @property
    def found(self) -> int:
        return sum(source.found for source in self.sources)

    @property
    def no_valid(self) -> list[str]:
        return [path for source in self.sources for path in source.no_valid]

    @property
    def unreadable(self) -> list[tuple[str, str]]:
        return [entry for source in self.sources for entry in source.unreadable]

    @property
    def dropped(self) -> list[str]:
        return [path for source in self.sources for path in source.dropped]

    def groups(self) -> dict[str, int]:
        """Samples of each dataset, in sample order."""
        sizes: dict[str, int] = {}
        for source in self.sources:
            sizes[source.name] = sizes.get(source.name, 0) + len(source.samples)
        return sizes

    def probabilities(self) -> dict[str, float]:
        """The probability of drawing each dataset: the --mix, or the share of its samples."""
        sizes = self.groups()
        total = sum(sizes.values())
        return dict(self.weights) if self.weights is not None else {name: size / total for name, size in sizes.items()}


EVERY = "*"
"""The key of a bare NUMBER in `parse_values(..., bare=True)`: the value for every dataset not named."""


def parse_values(text: str | None, option: str, finite: bool = True, bare: bool = False) -> dict[str, float]:
    """`NAME=NUMBER,...` as {dataset: number} (with `bare`, a NUMBER alone is the value for every other dataset,
    under EVERY); UsageError unless every NAME is a dataset named once and every NUMBER is positive (and finite,
    with `finite`)."""
    values: dict[str, float] = {}
    for item in text.split(",") if text else []:
        name, equals, number = (part.strip() for part in item.partition("="))
        if bare and not equals:
            name, equals, number = EVERY, "=", name
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not equals or name.lower() not in (*DATASETS, *((EVERY,) if bare else ())) or not value > 0 or (finite and math.isinf(value)):
            raise UsageError(f"{option} takes NAME=NUMBER,... with NAME one of {', '.join(DATASETS)} and a positive "
                             f"{'number' if finite else 'number or inf'}{' (a bare NUMBER: every other dataset)' if bare else ''}"
                             f", got {item.strip()!r}")
        if name.lower() in values:
            raise UsageError(f"{option} names {name} twice")
        values[name.lower()] = value
    return values


def metric_range(max_depth: str | None) -> float | None:
    """The bare METRES of `--max-depth` (the range of a metric head, and the cap of every dataset not named);
    None when there is none or it is infinite."""
    value = parse_values(max_depth, "--max-depth", finite=False, bare=True).get(EVERY)
    return value if value is not None and math.isfinite(value) else None


def parse_roots(values: Sequence[Path | str]) -> dict[str | None, Path]:
    """--data-root values (`DIR` for every source, `NAME=DIR` for one dataset's) by dataset (None: every one)."""
    roots: dict[str | None, Path] = {}
    for value in values:
        name, equals, folder = str(value).partition("=")
        key = name.lower() if equals and name.lower() in DATASETS else None
        path = Path(folder) if key else Path(value)
        if key in roots:
            raise UsageError(f"--data-root given twice for {key or 'every source'}")
        if not path.is_dir():
            raise UsageError(f"--data-root {value}: no such folder")
        roots[key] = path
    return roots


def _check_names(names: set[str], given: dict[str, float], option: str, every: bool) -> None:
    """UsageError when `option` names a dataset no source is (or, with `every`, leaves one out)."""
    unknown, missing = sorted(set(given) - names - {EVERY}), sorted(names - set(given))
    if unknown:
        raise UsageError(f"{option} names {', '.join(unknown)}, which no data argument is")
    if every and missing:
        raise UsageError(f"{option} gives no weight to {', '.join(missing)}: give every dataset trained on a weight")


def _open(spec: SourceSpec, root: Path | None, cap: float | None, depth_scale: float,
          note: Callable[[str], None]) -> Source:
    """The source of one data argument, its depth capped at `cap` metres (None or inf: no cap)."""
    opened = open_source(spec, root, depth_scale, cap)
    if opened.note:
        note(opened.note)
    return Source(spec.text, spec.dataset, opened.data.reader, list(opened.data.samples))


def _grouped(sources: list[Source]) -> list[Source]:
    """`sources` with those of one dataset next to each other, datasets in the order they first appear."""
    first: dict[str, int] = {}
    for index, source in enumerate(sources):
        first.setdefault(source.name, index)
    return sorted(sources, key=lambda source: first[source.name])


def _open_all(specs: list[SourceSpec], roots: Sequence[Path | str], caps: dict[str, float], depth_scale: float,
              note: Callable[[str], None]) -> list[Source]:
    """The sources of `specs`, each list under its dataset's data root and depth capped by its dataset's cap."""
    folders = parse_roots(roots)
    return [_open(spec, folders.get(spec.dataset, folders.get(None)),
                  caps.get(spec.dataset, caps.get(EVERY, default_max_depth(spec.dataset))), depth_scale, note)
            for spec in specs]


def open_sources(data: Sequence[Path | str], note: Callable[[str], None], roots: Sequence[Path | str] = (),
                 depth_scale: float = 1000.0, max_depth: str | None = None) -> list[Source]:
    """The sources of the data arguments, grouped by dataset; `note` is told which prefixes of list files were
    replaced (or should be)."""
    caps = parse_values(max_depth, "--max-depth", finite=False, bare=True)
    specs = [parse_source(str(item)) for item in data]
    _check_names({spec.dataset for spec in specs}, caps, "--max-depth", every=False)
    return _grouped(_open_all(specs, roots, caps, depth_scale, note))


def validation_sources(val: Sequence[Path | str], note: Callable[[str], None], roots: Sequence[Path | str] = (),
                       depth_scale: float = 1000.0, max_depth: str | None = None) -> list[Source]:
    """The --val arguments, read as the training data is (named datasets, lists, data roots, depth caps), in the
    order given and unchecked: the evaluation skips and reports what it cannot read."""
    caps = parse_values(max_depth, "--max-depth", finite=False, bare=True)
    return _open_all([parse_source(str(item)) for item in val], roots, caps, depth_scale, note)


def _check(sample: Sample, reader: Reader, score: bool) -> tuple[str, str | ScoreRow | None]:
    """('ok', score row or None), ('empty', None) or ('unreadable', reason) for one sample."""
    try:
        depth, valid = reader.truth(sample)
        size = reader.image_size(sample)
    except InputError as exc:
        return "unreadable", str(exc)
    if size != depth.shape:
        return "unreadable", (f"{reader.where(sample.rgb)}: image is {size[1]}×{size[0]}, depth "
                              f"{PurePosixPath(sample.depth).name} is {depth.shape[1]}×{depth.shape[0]}")
    if not valid.any():
        return "empty", None
    return "ok", (score_array(np.where(valid, depth, 0.0)) if score else None)


def scan_source(source: Source, keep: float | None, pool: Executor,
                progress: Callable[[], None] | None = None) -> Source:
    """`source` with each sample's ground truth read once: those without a valid pixel or unreadable left out,
    and with `keep` the data-quality filter of `anydepth score --keep` (DDS and GCS) applied within it."""
    checked = replace(source, samples=[], found=len(source.samples), no_valid=[], unreadable=[], dropped=[])
    rows: list[ScoreRow] = []

    def check(sample: Sample) -> tuple[str, str | ScoreRow | None]:
        return _check(sample, source.reader, keep is not None)

    where = source.reader.where
    for sample, (status, detail) in zip(source.samples, pool.map(check, source.samples)):
        if progress is not None:
            progress()
        if status == "unreadable":
            checked.unreadable.append((where(sample.rgb), str(detail)))
        elif status == "empty":
            checked.no_valid.append(where(sample.depth))
        else:
            if isinstance(detail, ScoreRow):
                rows.append(replace(detail, path=str(len(checked.samples))))
            checked.samples.append(sample)
    if keep is not None:
        kept = {int(index) for index in select_keep(rows, keep)}
        checked.dropped = [where(sample.rgb) for i, sample in enumerate(checked.samples) if i not in kept]
        checked.samples = [sample for i, sample in enumerate(checked.samples) if i in kept]
    return checked


def scan(sources: Sequence[Source], keep: float | None = None, workers: int = 1,
         progress: Callable[[], None] | None = None) -> list[Source]:
    """Every source checked (see `scan_source`)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [scan_source(source, keep, pool, progress) for source in sources]


def weigh(sources: list[Source], mix: str | None) -> DataReport:
    """The report of the checked sources with the --mix probabilities (normalised); UsageError when it leaves a
    dataset out, names one that is not trained on, or weighs one without a usable sample."""
    weights = parse_values(mix, "--mix")
    report = DataReport(sources)
    if not weights:
        return report
    sizes = report.groups()
    _check_names(set(sizes), weights, "--mix", every=True)
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        raise UsageError(f"--mix weighs {', '.join(empty)}, which has no usable sample")
    total = sum(weights.values())
    report.weights = {name: weights[name] / total for name in sizes}
    return report


def _read(data: Sequence[Path | str], reporter: DataReporter, roots: Sequence[Path | str], mix: str | None,
          keep: float | None, depth_scale: float, max_depth: str | None, workers: int) -> DataReport:
    sources = open_sources(data, reporter.note, roots, depth_scale, max_depth)
    reporter.scanning(sum(len(source.samples) for source in sources))
    return weigh(scan(sources, keep, workers, reporter.scanned), mix)


def _from_main(world: World, read: Callable[[], DataReport]) -> DataReport:
    """`read()` on rank 0, and its result, or its error as a UsageError, on every process."""
    if not world.distributed:
        return read()
    outcome: DataReport | AnyDepthError | None = None
    if world.main:
        try:
            outcome = read()
        except AnyDepthError as exc:
            outcome = UsageError(str(exc))
    outcome = distributed.broadcast(world, outcome)
    if isinstance(outcome, AnyDepthError):
        raise outcome
    return outcome


def training_data(data: Sequence[Path | str], world: World, reporter: DataReporter, *, roots: Sequence[Path | str] = (),
                  mix: str | None = None, keep: float | None = None, depth_scale: float = 1000.0,
                  max_depth: str | None = None, workers: int = 1) -> DataReport:
    """The checked training data of the data arguments (read on rank 0), reported; UsageError when there is
    none or an argument is wrong (on every process)."""
    if not data:
        raise UsageError("no training data: pass one or more folders or list files")
    report = _from_main(world, lambda: _read(data, reporter, roots, mix, keep, depth_scale, max_depth, workers))
    reporter.data(report)
    if not report.samples:
        raise UsageError(f"no usable training samples among {report.found} ({len(report.no_valid)} without a valid "
                         f"pixel, {len(report.unreadable)} unreadable, {len(report.dropped)} dropped by --keep)")
    return report


def _sections(report: DataReport, entries: Callable[[Source], list[str]]) -> list[str]:
    """The entries of every source that has some, each source's after a `# SOURCE: N of FOUND` line."""
    lines = []
    for source in report.sources:
        listed = entries(source)
        if listed:
            lines += [f"# {source.label}: {len(listed)} of {source.found}", *listed]
    return lines


def write_data_lists(folder: Path, report: DataReport) -> None:
    """`dropped.txt` (what --keep left out) and `skipped.txt` (unreadable samples, tab, the reason), in sections
    per source, each when it has an entry."""
    dropped = _sections(report, lambda source: source.dropped)
    skipped = _sections(report, lambda source: [f"{path}\t{reason}" for path, reason in source.unreadable])
    for name, lines in ((run.DROPPED, dropped), (run.SKIPPED, skipped)):
        if lines:
            write_lines(folder / name, lines)
