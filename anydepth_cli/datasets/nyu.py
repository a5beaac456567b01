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

from anydepth_cli.datasets.archive import NamingRule, Sample
from anydepth_cli.datasets.files import decode_png_metres

NAME = "nyu"
TITLE = "NYUv2"
LOCATION = "nyuv2/nyu_labeled_extracted.tar"
STANDARD_COUNT = 654
NAMING = NamingRule(r"(test/[^/]+)/rgb_(\d+)\.png", rgb=r"\g<0>", depth=r"\1/depth_\2.png")


def ground_truth(depth: bytes, name: str, image_size: tuple[int, int], mask: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The raw depth in metres (float32) and where it was measured."""
    return decode_png_metres(depth, name, 1000.0)


def sample_from_line(fields: list[str]) -> Sample | None:
    """`RGB DEPTH [FILLED]`: the filled depth is not scored."""
    return Sample(fields[0], fields[1])
