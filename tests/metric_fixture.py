"""The tiny Depth Anything V2 metric fixture of tests/data/metric: its checkpoint built at run time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FOLDER = Path(__file__).parent / "data" / "metric"
ARCH = FOLDER / "tiny_dav2_metric.json"
META = json.loads(ARCH.read_text())
ARRAYS = FOLDER / "tiny_dav2_metric.npz"
MAX_DEPTH = META["config"]["max_depth"]


def build_checkpoint(folder: Path) -> Path:
    """The fixture's weights saved as a `.pth` in `folder`, in the published key layout."""
    with np.load(ARRAYS) as arrays:
        state = {key[len("weight."):]: torch.from_numpy(arrays[key]) for key in arrays.files
                 if key.startswith("weight.")}
    path = folder / "tiny_dav2_metric.pth"
    torch.save(state, path)
    return path


def cases() -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB photo, the reference's map in metres) for every case."""
    with np.load(ARRAYS) as arrays:
        return [(arrays[f"photo_{case['index']}"], arrays[f"depth_{case['index']}"]) for case in META["cases"]]
