"""KITTI, Eigen et al.'s test split with the annotated depth maps (652 of its 697 frames have them), as in
the standard evaluation tar `kitti/kitti_eigen_split_test.tar`.

Format (KITTI raw data, Geiger et al., IJRR 2013, with the depth completion benchmark's annotated depth,
Uhrig et al., 3DV 2017, as Marigold's evaluation data distributes them):
`<date>/<date>_drive_<n>_sync/image_0{2,3}/data/<frame>.png` (about 375×1242 RGB) and
`<date>_drive_<n>_sync/proj_depth/groundtruth/image_0{2,3}/<frame>.png` (16-bit, metres × 256, 0 = no
measurement). Standard filename list (Marigold's `data_split/kitti_depth/eigen_test_files_with_gt.txt`):
`RGB DEPTH FOCAL`, where DEPTH is `None` for the 45 frames without annotated depth.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule, Sample
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_png_metres


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres (float32) and where the projected LiDAR measured it."""
    return decode_png_metres(data, name, 256.0)


def sample_from_line(fields: list[str]) -> Sample | None:
    """`RGB DEPTH FOCAL`; None (no ground truth) when DEPTH is `None`."""
    return None if fields[1] == "None" else Sample(fields[0], fields[1])


FAMILY = Family(
    "kitti", "KITTI",
    naming=(NamingRule(r"((\d{4}_\d\d_\d\d)_drive_\d+_sync)/proj_depth/groundtruth/(image_0[23])/(\d+\.png)",
                       rgb=r"\2/\1/\3/data/\4", depth=r"\g<0>"),),
    decode=decode,
    layout="kitti/kitti_eigen_split_test.tar or its extracted contents",
    columns="RGB DEPTH FOCAL",
    from_line=sample_from_line,
    location="kitti/kitti_eigen_split_test.tar",
    standard_count=652,
)
