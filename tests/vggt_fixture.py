"""The VGGT parity fixture in tests/data (see tests/data/README.md): its architecture, and its checkpoint written
out at run time in VGGT's layout (`aggregator.*` / `depth_head.*`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from anydepth_cli.models.config import NetworkConfig

VGGT_FIXTURE = Path(__file__).parent / "data" / "tiny_vggt_sdt.npz"
STATE = "state/"


def vggt_arrays() -> np.lib.npyio.NpzFile:
    return np.load(VGGT_FIXTURE)


def vggt_config() -> NetworkConfig:
    return NetworkConfig.from_dict(json.loads(str(vggt_arrays()["config"])))


def vggt_state() -> dict[str, torch.Tensor]:
    """The fixture's weights, keyed as VGGT's own checkpoint keys them."""
    arrays = vggt_arrays()
    return {k[len(STATE):]: torch.from_numpy(arrays[k]) for k in arrays.files if k.startswith(STATE)}


def write_vggt_checkpoint(folder: Path, **extra: torch.Tensor) -> Path:
    """The fixture's checkpoint as a .pth in `folder`, with `extra` entries added (other parts of a whole model)."""
    path = folder / "tiny_vggt_sdt.pth"
    torch.save({**vggt_state(), **extra}, path)
    return path


def write_vggt_arch(folder: Path) -> Path:
    path = folder / "tiny_vggt_sdt.json"
    path.write_text(json.dumps(json.loads(str(vggt_arrays()["config"]))))
    return path
