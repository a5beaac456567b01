"""IRS (Wang et al.): indoor robotics stereo rendered in Unreal Engine, with disparity ground truth.

Format, from the IRS repository (`dataloader/SIRSLoader.py`, `lists/*_TRAIN.list`): `IRSDataset/GROUP/SCENE/l_N.png`
(the left photo, 960×540) with `d_N.exr`, the left disparity in pixels as an OpenEXR image. The camera has a
focal length of 480 px (the loader's fx = fy) and a 0.1 m baseline, so depth = 480 × 0.1 / disparity metres
(the conversion public IRS preprocessing scripts apply, with these two constants); a disparity of 0 or less
has no depth. No cap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anydepth_cli.datasets.files import decode_exr
from anydepth_cli.datasets.generic import Pair
from anydepth_cli.datasets.layout import find_pairs

NAME = "irs"
MAX_DEPTH: float | None = None
FOCAL = 480.0
BASELINE = 0.1


def decode(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres and validity of an IRS disparity EXR (disparity ≤ 0 or non-finite invalid)."""
    disparity = decode_exr(data, name)
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = FOCAL * BASELINE / np.where(valid, disparity, np.float32(1.0))
    return np.where(valid, depth, 0.0).astype(np.float32), valid


def _depth_of(image: Path) -> Path:
    return image.with_name("d_" + image.stem.removeprefix("l_") + ".exr")


def find(folder: str | Path) -> list[Pair]:
    """The left photos under `folder` (the dataset's root or any folder in it)."""
    return find_pairs(folder, [("l_*.png", _depth_of)], "SCENE/l_N.png beside SCENE/d_N.exr")
