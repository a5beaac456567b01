"""DIODE, the validation split, indoor and outdoor (771 images), as in the standard evaluation tar
`diode/diode_val.tar`.

Format (DIODE, Vasiljevic et al., 2019, as published at diode-dataset.org and distributed in Marigold's
evaluation data): `{indoors,outdoor}/scene_<n>/scan_<n>/<name>.png` (768×1024 RGB),
`<name>_depth.npy` (float32 depth in metres, 768×1024×1) and `<name>_depth_mask.npy` (the pixels whose
depth is valid, nonzero = valid). Standard filename list (Marigold's
`data_split/diode_depth/diode_val_all_filename_list.txt`): `RGB DEPTH MASK`.
"""

from __future__ import annotations

import numpy as np

from anydepth_cli.datasets.archive import NamingRule, Sample
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_npy
from anydepth_cli.errors import InputError


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth in metres (float32), every pixel valid: the sample's published mask alone says which pixels count."""
    metres = decode_npy(data, name).astype(np.float32)
    return metres, np.ones(metres.shape, dtype=bool)


def sample_from_line(fields: list[str]) -> Sample | None:
    """`RGB DEPTH MASK`."""
    if len(fields) < 3:
        raise InputError(f"a DIODE line needs RGB DEPTH MASK, got {' '.join(fields)!r}")
    return Sample(fields[0], fields[1], fields[2])


FAMILY = Family(
    "diode", "DIODE",
    naming=(NamingRule(r"(.+)\.png", rgb=r"\g<0>", depth=r"\1_depth.npy", mask=r"\1_depth_mask.npy"),),
    decode=decode,
    layout="diode/diode_val.tar or its extracted contents",
    columns="RGB DEPTH MASK",
    from_line=sample_from_line,
    location="diode/diode_val.tar",
    standard_count=771,
)
