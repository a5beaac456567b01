"""Virtual KITTI 2 (NAVER LABS Europe): driving scenes rendered in Unity, clones of KITTI sequences.

Format, from the dataset's readme and the loader of Lotus (`utils/vkitti_dataset.py`), whose preparation
AnyDepth's README follows: `SceneNN/VARIATION/frames/rgb/Camera_K/rgb_NNNNN.jpg` with
`SceneNN/VARIATION/frames/depth/Camera_K/depth_NNNNN.png`, a single-channel 16-bit PNG of the z-depth in
centimetres; 65535 (655.35 m, the far plane) is the sky and 0 has no depth.

Default cap 80 m, the usual limit for driving scenes (Lotus trains on depths below 80 m, as KITTI is evaluated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anydepth_cli.datasets.files import decode_png_depth
from anydepth_cli.datasets.generic import Pair
from anydepth_cli.datasets.layout import find_pairs

NAME = "vkitti"
MAX_DEPTH: float | None = 80.0
SKY = 65535
CENTIMETRES = 100.0


def decode(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres and validity of a Virtual KITTI 2 depth PNG (the sky and 0 invalid)."""
    raw = decode_png_depth(data, name)
    valid = (raw > 0) & (raw < SKY)
    return np.where(valid, raw / CENTIMETRES, 0.0).astype(np.float32), valid


def _depth_of(image: Path) -> Path:
    camera = image.parent
    return camera.parent.parent / "depth" / camera.name / image.name.replace("rgb_", "depth_", 1).replace(".jpg", ".png")


def find(folder: str | Path) -> list[Pair]:
    """The samples under `folder` (the dataset's root or any folder in it)."""
    return find_pairs(folder, [("rgb/Camera_*/rgb_*.jpg", _depth_of)],
                      "SceneNN/VARIATION/frames/rgb/Camera_K/rgb_NNNNN.jpg beside frames/depth/Camera_K/depth_NNNNN.png")
