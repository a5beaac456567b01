"""ScanNet v2, the validation split sampled to 800 frames, as in the standard evaluation tar
`scannet/scannet_val_sampled_800_1.tar`.

Format (ScanNet's exported frames, Dai et al., CVPR 2017, as Marigold's evaluation data distributes them):
`<scene>/color/<frame>.jpg` (RGB) and `<scene>/depth/<frame>.png` (16-bit millimetres, 0 = no measurement).
Standard filename list (Marigold's `data_split/scannet_depth/scannet_val_sampled_list_800_1.txt`): `RGB DEPTH`.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule, Sample
from anydepth_cli.datasets.files import decode_png_metres

NAME = "scannet"
TITLE = "ScanNet"
LOCATION = "scannet/scannet_val_sampled_800_1.tar"
STANDARD_COUNT = 800
NAMING = NamingRule(r"(.*)color/([^/]+)\.jpg", rgb=r"\g<0>", depth=r"\1depth/\2.png")


def ground_truth(depth: bytes, name: str, image_size: tuple[int, int], mask: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres (float32) and where it was measured."""
    return decode_png_metres(depth, name, 1000.0)


def sample_from_line(fields: list[str]) -> Sample | None:
    """`RGB DEPTH`."""
    return Sample(fields[0], fields[1])
