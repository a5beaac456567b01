"""NYU Depth V2, the labeled set's test split (654 images), as in the standard evaluation tar
`nyuv2/nyu_labeled_extracted.tar`.

Format (the labeled set of Silberman et al., ECCV 2012, extracted to files as Marigold's evaluation data
distributes it): `test/<scene>/rgb_<id>.png` (480×640 RGB), `test/<scene>/depth_<id>.png` (the raw sensor
depth, 16-bit millimetres, 0 = no measurement) and `test/<scene>/filled_<id>.png` (the in-painted depth, not
scored). The tar also holds the `train/` split, which is not part of the benchmark. Standard filename list
(Marigold's `data_split/nyu_depth/labeled/filename_list_test.txt`): `RGB DEPTH FILLED`.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family, rgb_depth
from anydepth_cli.datasets.files import decode_png_metres


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The raw depth in metres (float32) and where it was measured."""
    return decode_png_metres(data, name, 1000.0)


FAMILY = Family(
    "nyu", "NYUv2",
    naming=(NamingRule(r"(test/[^/]+)/rgb_(\d+)\.png", rgb=r"\g<0>", depth=r"\1/depth_\2.png"),),
    decode=decode,
    layout="nyuv2/nyu_labeled_extracted.tar or its extracted contents",
    columns="RGB DEPTH FILLED",
    from_line=rgb_depth,
    location="nyuv2/nyu_labeled_extracted.tar",
    standard_count=654,
)
