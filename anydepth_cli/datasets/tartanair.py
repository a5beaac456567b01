"""TartanAir (CMU AirLab): AirSim flights through Unreal Engine environments.

Format, from `tartanair_tools` (`data_type.md`): `ENV/Easy|Hard/PNNN/image_left/NNNNNN_left.png` (640×480 RGB)
with `depth_left/NNNNNN_left_depth.npy`, float32 planar depth in metres (likewise `_right`). The sky sphere has
"a large depth value (e.g. 10000)" instead of infinity: depths of 10000 m and more are the sky, the threshold
users of the set arrived at from its statistics (Depth-Anything-V2 issue #144; aim-uofa/Depth3D's TartanAir
loader masks the same). The `amusement` environment caps its sky with a nearer dome that this rule does not catch:
leave it out of a list, or set a cap with `--max-depth tartanair=METRES`. No default cap.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_npy

SKY_DEPTH = 10000.0


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres and validity of a TartanAir depth `.npy` (the sky, 0 and non-finite values invalid)."""
    depth = decode_npy(data, name).astype(np.float32)
    valid = np.isfinite(depth) & (depth > 0) & (depth < SKY_DEPTH)
    return np.where(valid, depth, np.float32(0.0)), valid


FAMILY = Family(
    "tartanair", "TartanAir",
    naming=(NamingRule(r"(.*/)?image_(left|right)/([^/]*_\2)\.png", rgb=r"\g<0>", depth=r"\1depth_\2/\3_depth.npy"),),
    decode=decode,
    layout="PNNN/image_left/NNNNNN_left.png beside depth_left/NNNNNN_left_depth.npy",
)
