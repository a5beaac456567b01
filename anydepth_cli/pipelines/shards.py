"""Sharded runs: one deterministic share of the inputs per process, from `--shard K/N` or the launcher.

Under `torchrun` (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`) or Slurm's `srun` (`SLURM_PROCID`,
`SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`) every process takes its share without being told; each picks
its local GPU. Inputs are sorted by relative path and dealt round-robin, so the shares are
disjoint, together hold every input, and do not depend on the order the files were found in.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, TypeVar

from anydepth_cli.errors import UsageError
from anydepth_cli.io.writers import atomic_write

if TYPE_CHECKING:
    from anydepth_cli.io.images import InputItem

T = TypeVar("T")

LAUNCHERS = (("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
             ("srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"))
"""(name, rank, world size, local rank) variables of each launcher, in order of precedence. Slurm's world is
the job step's task count: a batch script also sees SLURM_PROCID=0 and the job's SLURM_NTASKS, but it is
one process, not the first of many."""


@dataclass(frozen=True)
class Shard:
    """Share `index` of `count` (0-based), where it came from, and the process's local rank if launched."""

    index: int
    count: int
    source: str
    local_rank: int | None = None

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def select(self, items: Sequence[T], key: Callable[[T], str]) -> list[T]:
        """This shard's items: every `count`-th of `items` sorted by `key`, starting at `index`."""
        return sorted(items, key=key)[self.index::self.count]

    def summary_path(self, out_dir: Path) -> Path:
        return out_dir / f"anydepth-shard-{self.name}.json"


def from_launcher(environ: Mapping[str, str]) -> Shard | None:
    """The share torchrun or srun gave this process (rank, world size, local rank), or None when neither launched
    it; sharded runs and data-parallel training both read their place from here."""
    for name, rank, world, local in LAUNCHERS:
        if rank in environ and world in environ:
            try:
                index, count = int(environ[rank]), int(environ[world])
                local_rank = int(environ[local]) if local in environ else None
            except ValueError:
                raise UsageError(f"{rank}={environ[rank]!r} / {world}={environ[world]!r} from {name} are not "
                                 "numbers") from None
            return _checked(index, count, name, local_rank)
    return None


def resolve_shard(option: str | None, environ: Mapping[str, str] = os.environ) -> Shard | None:
    """The shard of this run: `--shard K/N` (K from 0 to N-1, like RANK), `auto` (from the launcher, required), `off`, or None
    (from the launcher when there is one). A single-process share is no shard."""
    if option == "off":
        return None
    if option is None or option == "auto":
        shard = from_launcher(environ)
        if shard is None and option == "auto":
            raise UsageError("--shard auto needs a launcher: RANK/WORLD_SIZE (torchrun) or "
                             "SLURM_PROCID/SLURM_STEP_NUM_TASKS (srun); or give --shard K/N")
        return shard if shard is not None and shard.count > 1 else None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", option)
    if match is None:
        raise UsageError(f"--shard expects K/N (e.g. 0/4 for the first of four), auto or off, not {option!r}")
    launched = from_launcher(environ)
    return _checked(int(match[1]), int(match[2]), "--shard", launched.local_rank if launched else None)


def _checked(index: int, count: int, source: str, local_rank: int | None) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{source} gave shard {index} of {count}: it must be from 0 to {count - 1}")
    return Shard(index, count, source, local_rank)


def write_shard_summary(shard: Shard, out_dir: Path, inputs: Sequence[Path], written: int, skipped: int,
                        failed: Sequence[tuple[Path, str]], seconds: float) -> Path:
    """This shard's own record of what it was given and what it did, as JSON beside the outputs."""
    record = {
        "shard": shard.index, "of": shard.count, "source": shard.source,
        "inputs": [str(path) for path in inputs], "written": written, "skipped": skipped,
        "failed": [{"path": str(path), "reason": reason} for path, reason in failed], "seconds": seconds,
    }
    path = shard.summary_path(out_dir)
    atomic_write(path, lambda temp: temp.write_text(json.dumps(record, indent=1) + "\n"))
    return path


def relative_key(item: InputItem) -> str:
    """The key inputs are sorted by before they are dealt: the relative path."""
    return item.relative.as_posix()
