"""BlendedMVS (Yao et al., CVPR 2020): photos blended with renderings of textured meshes of 113 scenes.

Format, from the dataset's README (the MVSNet input format): `PID/blended_images/NNNNNNNN.jpg` (the blended
photo; `NNNNNNNN_masked.jpg` is the same with unreconstructed parts blacked out) with
`PID/rendered_depth_maps/NNNNNNNN.pfm`, the mesh's depth as a PFM, 0 where the mesh has no surface. Depths are
in the units of each scene's reconstruction, not metres: the scale is unknown, which a scale-and-shift-invariant
loss does not need. No cap.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_pfm


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth (scene units) and validity of a BlendedMVS rendered depth map (0 and non-finite invalid)."""
    depth = decode_pfm(data, name)
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, np.float32(0.0)), valid


FAMILY = Family(
    "blendedmvs", "BlendedMVS",
    naming=(NamingRule(r"(.*/)?blended_images/([0-9][^/]*[0-9])\.jpg", rgb=r"\g<0>",
                       depth=r"\1rendered_depth_maps/\2.pfm"),),
    decode=decode,
    layout="PID/blended_images/NNNNNNNN.jpg beside PID/rendered_depth_maps/NNNNNNNN.pfm",
)
