"""Multi-process training under torchrun or Slurm's srun: process-group set-up and the few collectives used.

The rank, world size and local rank come from the launcher's environment as sharded predict runs read it
(`pipelines.shards.from_launcher`: torchrun's RANK/WORLD_SIZE/LOCAL_RANK, or srun's SLURM_PROCID,
SLURM_STEP_NUM_TASKS and SLURM_LOCALID). torchrun also sets MASTER_ADDR and MASTER_PORT; under srun the job
script must export them (on one node they default to 127.0.0.1:29500).
No process is launched here: one process per GPU (or CPU slot) is the launcher's business.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from anydepth_cli.errors import UsageError
from anydepth_cli.pipelines.shards import from_launcher

T = TypeVar("T")
TIMEOUT = timedelta(hours=1)
"""How long a process waits for the others (rank 0 validates and saves while they wait)."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The rank, world size and local rank the launcher set (see `pipelines.shards.from_launcher`); one process
    if none did."""
    launched = from_launcher(os.environ)
    if launched is None:
        return World()
    return World(launched.index, launched.count, launched.local_rank or 0)


def init(world: World, device: torch.device) -> None:
    """Join the process group of `world` (NCCL on GPUs, gloo otherwise); nothing for a single process."""
    if not world.distributed:
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        if os.environ.get("SLURM_NNODES", "1") != "1":
            raise UsageError("under srun on several nodes, export MASTER_ADDR (the first node's host name) and "
                             "MASTER_PORT before starting anydepth train")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=world.rank, world_size=world.size, timeout=TIMEOUT)


def device_for(world: World, device: torch.device) -> torch.device:
    """The device of this process: its local GPU when training on CUDA, else `device`."""
    if device.type != "cuda":
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise UsageError(f"local rank {world.local_rank} has no GPU: {torch.cuda.device_count()} visible")
    index = world.local_rank if world.distributed else (device.index or 0)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def shutdown(world: World) -> None:
    """Leave the process group."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(world: World, value: T) -> T:
    """Rank 0's `value` (any picklable object) on every process."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(world: World, value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over the processes."""
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= world.size
    return value


def barrier(world: World) -> None:
    """Wait until every process gets here."""
    if world.distributed:
        dist.barrier()
