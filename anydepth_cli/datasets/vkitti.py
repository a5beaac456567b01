"""Virtual KITTI 2 (NAVER LABS Europe): driving scenes rendered in Unity, clones of KITTI sequences.

Format, from the dataset's readme and the loader of Lotus (`utils/vkitti_dataset.py`), whose preparation
AnyDepth's README follows: `SceneNN/VARIATION/frames/rgb/Camera_K/rgb_NNNNN.jpg` with
`SceneNN/VARIATION/frames/depth/Camera_K/depth_NNNNN.png`, a single-channel 16-bit PNG of the z-depth in
centimetres; 65535 (655.35 m, the far plane) is the sky and 0 has no depth.

Default cap 80 m, the usual limit for driving scenes (Lotus trains on depths below 80 m, as KITTI is evaluated).
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_png_depth

SKY = 65535
CENTIMETRES = 100.0


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres and validity of a Virtual KITTI 2 depth PNG (the sky and 0 invalid)."""
    raw = decode_png_depth(data, name)
    valid = (raw > 0) & (raw < SKY)
    return np.where(valid, raw / CENTIMETRES, 0.0).astype(np.float32), valid


FAMILY = Family(
    "vkitti", "Virtual KITTI 2",
    naming=(NamingRule(r"(.*/)?rgb/(Camera_[^/]*)/rgb_([^/]*)\.jpg", rgb=r"\g<0>", depth=r"\1depth/\2/depth_\3.png"),),
    decode=decode,
    layout="SceneNN/VARIATION/frames/rgb/Camera_K/rgb_NNNNN.jpg beside frames/depth/Camera_K/depth_NNNNN.png",
    max_depth=80.0,
)
