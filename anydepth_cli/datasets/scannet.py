"""ScanNet v2, the validation split sampled to 800 frames, as in the standard evaluation tar
`scannet/scannet_val_sampled_800_1.tar`.

Format (ScanNet's exported frames, Dai et al., CVPR 2017, as Marigold's evaluation data distributes them):
`<scene>/color/<frame>.jpg` (RGB) and `<scene>/depth/<frame>.png` (16-bit millimetres, 0 = no measurement).
Standard filename list (Marigold's `data_split/scannet_depth/scannet_val_sampled_list_800_1.txt`): `RGB DEPTH`.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family, rgb_depth
from anydepth_cli.datasets.files import decode_png_metres


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres (float32) and where it was measured."""
    return decode_png_metres(data, name, 1000.0)


FAMILY = Family(
    "scannet", "ScanNet",
    naming=(NamingRule(r"(.*)color/([^/]+)\.jpg", rgb=r"\g<0>", depth=r"\1depth/\2.png"),),
    decode=decode,
    layout="scannet/scannet_val_sampled_800_1.tar or its extracted contents",
    columns="RGB DEPTH",
    from_line=rgb_depth,
    location="scannet/scannet_val_sampled_800_1.tar",
    standard_count=800,
)
