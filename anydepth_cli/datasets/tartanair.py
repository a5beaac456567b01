"""TartanAir (CMU AirLab): AirSim flights through Unreal Engine environments.

Format, from `tartanair_tools` (`data_type.md`): `ENV/Easy|Hard/PNNN/image_left/NNNNNN_left.png` (640×480 RGB)
with `depth_left/NNNNNN_left_depth.npy`, float32 planar depth in metres (likewise `_right`). The sky sphere has
"a large depth value (e.g. 10000)" instead of infinity: depths of 10000 m and more are the sky, the threshold
users of the set arrived at from its statistics (Depth-Anything-V2 issue #144; aim-uofa/Depth3D's TartanAir
loader masks the same). The `amusement` environment caps its sky with a nearer dome that this rule does not catch:
leave it out of a list, or set a cap with `--max-depth tartanair=METRES`. No default cap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anydepth_cli.datasets.files import decode_npy
from anydepth_cli.datasets.generic import Pair
from anydepth_cli.datasets.layout import find_pairs

NAME = "tartanair"
MAX_DEPTH: float | None = None
SKY_DEPTH = 10000.0


def decode(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres and validity of a TartanAir depth `.npy` (the sky, 0 and non-finite values invalid)."""
    depth = decode_npy(data, name).astype(np.float32)
    valid = np.isfinite(depth) & (depth > 0) & (depth < SKY_DEPTH)
    return np.where(valid, depth, np.float32(0.0)), valid


def _depth_of(image: Path) -> Path:
    side = image.parent.name.removeprefix("image_")
    return image.parent.parent / f"depth_{side}" / image.name.replace(".png", "_depth.npy")


def find(folder: str | Path) -> list[Pair]:
    """The samples of both cameras under `folder` (the dataset's root or any folder in it)."""
    rules = [(f"image_{side}/*_{side}.png", _depth_of) for side in ("left", "right")]
    return find_pairs(folder, rules, "PNNN/image_left/NNNNNN_left.png beside depth_left/NNNNNN_left_depth.npy")
