"""ETH3D, the high-resolution multi-view benchmark's training scenes (454 DSLR images), as in the standard
evaluation tar `eth3d/eth3d.tar`.

Format (ETH3D, Schöps et al., CVPR 2017; depth files as documented at eth3d.net/documentation, "image
formats" of the multi-view data): `rgb/<scene>/images/dslr_images/<name>.JPG` (6048×4032 photos) and
`depth/<scene>_dslr_depth/<scene>/ground_truth_depth/dslr_images/<name>.JPG`: despite the suffix, raw
little-endian float32 depth in metres, row by row, at the photo's size (4032 rows × 6048 columns), with no
header; infinity marks pixels without ground truth. Standard filename list (Marigold's
`data_split/eth3d_depth/eth3d_filename_list.txt`): `RGB DEPTH`.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family, rgb_depth
from anydepth_cli.errors import InputError


def decode(depth: bytes, name: str, image_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres (float32) at the photo's `image_size` (rows, columns) and where it is finite and positive."""
    if image_size is None:
        raise InputError(f"{name} has no size of its own: it is read with its photo")
    height, width = image_size
    if len(depth) != 4 * height * width:
        raise InputError(f"{name} holds {len(depth)} bytes, not the {height}x{width} float32 depth of its photo")
    metres = np.frombuffer(depth, dtype="<f4").reshape(height, width)
    return metres, np.isfinite(metres) & (metres > 0)


FAMILY = Family(
    "eth3d", "ETH3D",
    naming=(NamingRule(r"depth/[^/]+/([^/]+)/ground_truth_depth/dslr_images/([^/]+)",
                       rgb=r"rgb/\1/images/dslr_images/\2", depth=r"\g<0>"),),
    decode=decode,
    layout="eth3d/eth3d.tar or its extracted contents",
    columns="RGB DEPTH",
    from_line=rgb_depth,
    location="eth3d/eth3d.tar",
    standard_count=454,
)
