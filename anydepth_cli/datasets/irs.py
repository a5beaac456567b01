"""IRS (Wang et al.): indoor robotics stereo rendered in Unreal Engine, with disparity ground truth.

Format, from the IRS repository (`dataloader/SIRSLoader.py`, `lists/*_TRAIN.list`): `IRSDataset/GROUP/SCENE/l_N.png`
(the left photo, 960×540) with `d_N.exr`, the left disparity in pixels as an OpenEXR image. The camera has a
focal length of 480 px (the loader's fx = fy) and a 0.1 m baseline, so depth = 480 × 0.1 / disparity metres
(the conversion public IRS preprocessing scripts apply, with these two constants); a disparity of 0 or less
has no depth. No cap.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_exr

FOCAL = 480.0
BASELINE = 0.1


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres and validity of an IRS disparity EXR (disparity ≤ 0 or non-finite invalid)."""
    disparity = decode_exr(data, name)
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = FOCAL * BASELINE / np.where(valid, disparity, np.float32(1.0))
    return np.where(valid, depth, 0.0).astype(np.float32), valid


FAMILY = Family(
    "irs", "IRS",
    naming=(NamingRule(r"(.*/)?l_([^/]*)\.png", rgb=r"\g<0>", depth=r"\1d_\2.exr"),),
    decode=decode,
    layout="SCENE/l_N.png beside SCENE/d_N.exr",
)
