"""Finding a dataset's samples in its own folder layout: each photo by a pattern, its depth by a path rule."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from anydepth_cli.datasets.generic import Pair
from anydepth_cli.errors import UsageError

Rule = tuple[str, Callable[[Path], Path]]
"""A recursive glob pattern of the photos and the path of a photo's depth file."""


def find_pairs(folder: str | Path, rules: Sequence[Rule], layout: str) -> list[Pair]:
    """The photos under `folder` that match a rule and whose depth file exists, sorted by path.

    UsageError when `folder` is not a folder or holds no such pair; `layout` describes the expected files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    pairs = []
    for pattern, depth_of in rules:
        for image in folder.rglob(pattern):
            depth = depth_of(image)
            if depth.is_file():
                pairs.append(Pair(image, depth))
    if not pairs:
        raise UsageError(f"no samples under {folder}: expected {layout}")
    return sorted(pairs, key=lambda pair: pair.image)

