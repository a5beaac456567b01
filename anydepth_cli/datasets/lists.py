"""List files of samples, as the papers publish their splits and the benchmarks their filename lists: one
`RGB DEPTH [THIRD]` per line, the third column each family's business (`Family.from_line`: a mask, NYU's filled
depth, KITTI's focal length).

Fields are separated by commas when the line has one (our manifests), else by whitespace (the published
splits, e.g. AnyDepth's `datasets/<name>/train.txt`: two absolute paths from the authors' machine). Blank lines
and lines starting with `#` are ignored.

Relative paths stay relative: to the data root when one is given, else to the list's folder (`SampleList.base`),
or to the benchmark set the list belongs to. Absolute
paths that are not on this machine are re-rooted: their shared leading folder is replaced by the data root.
Which leading part is replaced is found by trying the longest first on the first samples, so a root that holds
the dataset itself (`/data/vkitti2` for `/root/autodl-tmp/datasets/vkitti2/Scene01/...`) and one that holds
the authors' dataset folders (`/data` holding `vkitti2/`) both work. Files are not checked here: a missing
one is found when the sample is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath

from anydepth_cli.datasets.archive import Sample
from anydepth_cli.datasets.family import Family
from anydepth_cli.errors import InputError, UsageError

PROBES = 3
"""Samples whose files decide which part of a foreign prefix the data root replaces."""


@dataclass(frozen=True)
class SampleList:
    """The samples of a list file and what was done to their paths."""

    samples: list[Sample]
    base: Path
    """What relative names are relative to."""
    note: str | None = None
    """The prefix that was replaced, or the foreign prefix left as it is for want of a data root."""


def _fields(line: str) -> list[str]:
    return [field.strip() for field in line.split(",")] if "," in line else line.split()


def read_rows(path: Path, columns: str = "RGB DEPTH [MASK]") -> list[tuple[int, list[str]]]:
    """(line number, fields) of each sample line; UsageError naming the line for a malformed one (`columns`
    says what a line holds)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read list {path}: {exc}") from None
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _fields(line)
        if len(fields) not in (2, 3) or not all(fields):
            raise UsageError(f"{path}:{number}: expected '{columns}' (whitespace- or comma-separated), got {line!r}")
        rows.append((number, fields))
    if not rows:
        raise UsageError(f"list {path} names no samples")
    return rows


def foreign_prefix(rows: list[list[str]]) -> PurePath | None:
    """The folder all absolute paths of `rows` share, when it is not on this machine."""
    absolute = [field for row in rows for field in row if os.path.isabs(field)]
    if not absolute:
        return None
    prefix = PurePath(os.path.commonpath([os.path.dirname(field) for field in absolute]))
    return None if Path(prefix).exists() else prefix


def _rerooted(field: str, old: PurePath, root: Path) -> Path:
    return root / PurePath(field).relative_to(old)


def replaced_part(rows: list[list[str]], prefix: PurePath, root: Path) -> PurePath:
    """The leading part of `prefix` that `root` replaces: the longest one under which the first samples' files
    are found in `root`, else the whole prefix."""
    probes = [field for row in rows[:PROBES] for field in row if os.path.isabs(field)]
    for length in range(len(prefix.parts), 0, -1):
        old = PurePath(*prefix.parts[:length])
        if all(_rerooted(field, old, root).exists() for field in probes):
            return old
    return prefix


def read_list(path: str | Path, family: Family, root: Path | None = None) -> SampleList:
    """The samples of a list file of `family`, foreign absolute paths re-rooted (see the module); UsageError
    naming the line the family cannot read, or when no line has ground truth."""
    path = Path(path)
    numbered = read_rows(path, family.columns)
    rows = [fields for _, fields in numbered]
    prefix = foreign_prefix(rows)
    old, note = None, None
    if prefix is not None and root is not None:
        old = replaced_part(rows, prefix, root)
        note = f"{path}: replaced the prefix {old} of its paths with {root}"
    elif prefix is not None:
        note = f"{path}: its paths are under {prefix}, which is not on this machine: pass --data-root DIR to re-root them"

    def rerooted(field: str) -> str:
        if old is not None and os.path.isabs(field) and PurePath(field).is_relative_to(old):
            return str(_rerooted(field, old, root))
        return field

    samples = []
    for number, fields in numbered:
        try:
            sample = family.from_line([rerooted(field) for field in fields])
        except InputError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        if sample is not None:
            samples.append(sample)
    if not samples:
        raise UsageError(f"list {path} names no sample with ground truth")
    return SampleList(samples, root if root is not None else path.parent, note)
