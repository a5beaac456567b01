"""List files of samples, as the papers publish their splits: one `RGB DEPTH [MASK]` per line.

Fields are separated by commas when the line has one (our manifests), else by whitespace (the published
splits, e.g. AnyDepth's `datasets/<name>/train.txt`: two absolute paths from the authors' machine). Blank lines
and lines starting with `#` are ignored.

Relative paths resolve against the data root when one is given, else against the list's folder. Absolute
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

from anydepth_cli.datasets.generic import Pair
from anydepth_cli.errors import UsageError

PROBES = 3
"""Samples whose files decide which part of a foreign prefix the data root replaces."""


@dataclass(frozen=True)
class SampleList:
    """The samples of a list file and what was done to their paths."""

    pairs: list[Pair]
    note: str | None = None
    """The prefix that was replaced, or the foreign prefix left as it is for want of a data root."""


def _fields(line: str) -> list[str]:
    return [field.strip() for field in line.split(",")] if "," in line else line.split()


def read_rows(path: Path) -> list[list[str]]:
    """The `RGB DEPTH [MASK]` fields of each sample line; UsageError naming the line for a malformed one."""
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
            raise UsageError(f"{path}:{number}: expected 'RGB DEPTH [MASK]' (whitespace- or comma-separated), got {line!r}")
        rows.append(fields)
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


def read_list(path: str | Path, root: Path | None = None) -> SampleList:
    """The samples of a list file, relative paths resolved and foreign absolute ones re-rooted (see the module)."""
    path = Path(path)
    rows = read_rows(path)
    base = root if root is not None else path.parent
    prefix = foreign_prefix(rows)
    old, note = None, None
    if prefix is not None and root is not None:
        old = replaced_part(rows, prefix, root)
        note = f"{path}: replaced the prefix {old} of its paths with {root}"
    elif prefix is not None:
        note = f"{path}: its paths are under {prefix}, which is not on this machine: pass --data-root DIR to re-root them"

    def resolve(field: str) -> Path:
        if not os.path.isabs(field):
            return base / field
        if old is not None and PurePath(field).is_relative_to(old):
            return _rerooted(field, old, root)
        return Path(field)

    pairs = [Pair(*(resolve(field) for field in row)) for row in rows]
    return SampleList(pairs, note)
