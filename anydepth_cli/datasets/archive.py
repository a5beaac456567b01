"""A dataset's files, in a folder or in a plain tar read in place, and the one rule that finds its samples there.

A tar is indexed once (one header per member) and each member is read by seeking to its bytes, so nothing
is extracted to disk and several threads can read members at once. Names are POSIX paths relative to the
set's root, without a leading `./` (the standard evaluation tars store `./test/...`); a folder also reads
absolute paths (those of a list file).
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from anydepth_cli.errors import InputError, UsageError


@dataclass(frozen=True)
class Sample:
    """One sample of a set: its photo, its ground-truth depth and, where the set has one, its mask (paths in the set)."""

    rgb: str
    depth: str
    mask: str | None = None


@dataclass(frozen=True)
class NamingRule:
    """How a set names its samples: `pattern` is matched against every file name, and `rgb`, `depth` and
    `mask` (templates for `re.Match.expand`, `\\g<0>` for the matched name) give the sample's files."""

    pattern: str
    rgb: str
    depth: str
    mask: str | None = None

    def samples(self, names: list[str]) -> list[Sample]:
        """Every match whose files are all in `names`, in the order of `names`."""
        present, rule = set(names), re.compile(self.pattern)
        found = []
        for match in filter(None, map(rule.fullmatch, names)):
            sample = Sample(match.expand(self.rgb), match.expand(self.depth),
                            match.expand(self.mask) if self.mask else None)
            if {sample.rgb, sample.depth, sample.mask or sample.rgb} <= present:
                found.append(sample)
        return found


class Naming(Protocol):
    """How a set names its samples."""

    def samples(self, names: list[str]) -> list[Sample]:
        """The samples among a set's file names."""
        ...


class SetFiles(Protocol):
    """The files of one set, wherever they are stored."""

    root: Path

    def names(self) -> list[str]:
        """Every file in the set (relative POSIX paths), sorted."""
        ...

    def has(self, name: str) -> bool: ...

    def read(self, name: str) -> bytes:
        """The bytes of one file; InputError when it is not in the set or cannot be read."""
        ...

    def where(self, name: str) -> str:
        """A file as the user finds it: its path, or the tar and the member."""
        ...


def _normal(name: str) -> str:
    """A member name as a relative POSIX path: `./a/b` and `/a/b` are `a/b`."""
    parts = [part for part in PurePosixPath(name).parts if part not in ("/", ".")]
    return "/".join(parts)


class FolderFiles:
    """A set extracted into a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        found = []
        for folder, subfolders, files in os.walk(self.root):
            subfolders.sort()
            base = Path(folder).relative_to(self.root)
            found.extend((base / name).as_posix() for name in files)
        return sorted(found)

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read(self, name: str) -> bytes:
        path = self.root / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None

    def where(self, name: str) -> str:
        return str(self.root / name)


class TarFiles:
    """A set in an uncompressed tar, read in place: members are found by their offsets, never extracted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            with tarfile.open(root, "r:") as archive:
                members = archive.getmembers()
        except (OSError, tarfile.TarError) as exc:
            raise UsageError(f"cannot read {root} as a plain (uncompressed) tar: {exc}") from None
        self._members = {_normal(m.name): (m.offset_data, m.size) for m in members if m.isfile()}

    def names(self) -> list[str]:
        return sorted(self._members)

    def has(self, name: str) -> bool:
        return _normal(name) in self._members

    def read(self, name: str) -> bytes:
        try:
            offset, size = self._members[_normal(name)]
        except KeyError:
            raise InputError(f"{name} is not in {self.root}") from None
        try:
            with open(self.root, "rb") as stream:  # one handle per read, so reader threads never share a position
                stream.seek(offset)
                data = stream.read(size)
        except OSError as exc:
            raise InputError(f"cannot read {name} from {self.root}: {exc.strerror or exc}") from None
        if len(data) != size:
            raise InputError(f"{self.root} is truncated: {name} has {len(data)} of its {size} bytes")
        return data

    def where(self, name: str) -> str:
        return f"{self.root}:{_normal(name)}"


def open_files(path: Path) -> SetFiles:
    """The files of a set extracted into the folder `path`, or in the tar `path`; UsageError for anything else."""
    if path.is_dir():
        return FolderFiles(path)
    if path.is_file() and path.suffix.lower() == ".tar":
        return TarFiles(path)
    raise UsageError(f"{path} is not a folder or a .tar")


def locate(data_root: Path, location: str) -> SetFiles:
    """A set under `data_root` at its standard `location` (`FOLDER/NAME.tar`): that tar, or its contents
    extracted into `FOLDER/NAME/`, into `FOLDER/` itself, or into a folder named `FOLDER/NAME.tar/` (where
    the reference evaluation looks for them)."""
    archive = data_root / location
    if archive.is_file():
        return TarFiles(archive)
    for folder in (archive.with_suffix(""), archive, archive.parent):
        if folder.is_dir():
            return FolderFiles(folder)
    raise UsageError(f"{data_root} has no {location} (nor its contents extracted into "
                     f"{archive.with_suffix('').relative_to(data_root)}/ or {archive.parent.relative_to(data_root)}/)")
