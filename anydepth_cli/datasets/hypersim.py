"""Hypersim (Apple, Roberts et al. 2021): photorealistic indoor scenes, rendered with V-Ray.

Two encodings are read:

- As released (`ml-hypersim`'s README, the layout Lotus's `utils/hypersim_dataset.py` reads, which AnyDepth's
  README follows): `ai_VVV_NNN/images/scene_cam_KK_final_preview/frame.NNNN.tonemap.jpg` with
  `ai_VVV_NNN/images/scene_cam_KK_geometry_hdf5/frame.NNNN.depth_meters.hdf5`, the Euclidean distance in metres
  from each pixel's surface point to the camera centre (HDF5 dataset `dataset`, NaN without geometry). It
  becomes planar depth by depth = distance · f / √(x² + y² + f²), (x, y) the pixel centre's offset from the
  image centre and f the focal length of the 60° horizontal field of view (886.81 px at 1024 wide: ml-hypersim
  issue #9, the conversion Lotus and Marigold use). Reading HDF5 needs the `datasets` extra (h5py).
- As commonly preprocessed (Marigold's `preprocess_hypersim.py`): `SCENE/rgb_cam_KK_frNNNN.png` with
  `SCENE/depth_plane_cam_KK_frNNNN.png`, planar depth as a 16-bit PNG in millimetres, 0 without geometry.

No cap: indoor depths stay within a few tens of metres.
"""

from __future__ import annotations

import io
import math
import numpy as np

from anydepth_cli.datasets.archive import NamingRule
from anydepth_cli.datasets.family import Family
from anydepth_cli.datasets.files import decode_png_depth
from anydepth_cli.errors import InputError, MissingExtraError

FIELD_OF_VIEW = math.radians(60.0)
MILLIMETRES = 1000.0
HDF5_SUFFIXES = (".hdf5", ".h5")


def read_distance(data: bytes, name: str) -> np.ndarray:
    """The distance map of a Hypersim `depth_meters.hdf5` file, as float32."""
    try:
        import h5py
    except ImportError:
        raise MissingExtraError("h5py (to read Hypersim's HDF5)", "datasets") from None
    try:
        with h5py.File(io.BytesIO(data), "r") as file:
            distance = np.asarray(file["dataset"], dtype=np.float32)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read Hypersim HDF5 {name}: {exc}") from None
    if distance.ndim != 2:
        raise InputError(f"Hypersim HDF5 {name} must hold a 2-D map, got shape {distance.shape}")
    return distance


def planar_depth(distance: np.ndarray) -> np.ndarray:
    """Planar depth from distances to the camera centre, for Hypersim's pinhole camera (see the module)."""
    height, width = distance.shape
    focal = 0.5 * width / math.tan(0.5 * FIELD_OF_VIEW)
    x = np.arange(width, dtype=np.float64) - 0.5 * (width - 1)
    y = np.arange(height, dtype=np.float64)[:, None] - 0.5 * (height - 1)
    return (distance * focal / np.sqrt(x**2 + y**2 + focal**2)).astype(np.float32)


def decode(data: bytes, name: str, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Planar depth in metres and validity of a Hypersim depth file: `.hdf5` distances or a millimetre PNG."""
    if name.lower().endswith(HDF5_SUFFIXES):
        depth = planar_depth(read_distance(data, name))
    else:
        depth = decode_png_depth(data, name) / np.float32(MILLIMETRES)
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, np.float32(0.0)), valid


FAMILY = Family(
    "hypersim", "Hypersim",
    naming=(NamingRule(r"(.*/)?scene_cam_([^/]*)_final_preview/frame\.([^/]*)\.tonemap\.jpg",
                       rgb=r"\g<0>", depth=r"\1scene_cam_\2_geometry_hdf5/frame.\3.depth_meters.hdf5"),
            NamingRule(r"(.*/)?rgb_(cam_[^/]*_fr[^/]*\.png)", rgb=r"\g<0>", depth=r"\1depth_plane_\2")),
    decode=decode,
    layout="scene_cam_KK_final_preview/frame.NNNN.tonemap.jpg beside scene_cam_KK_geometry_hdf5/frame.NNNN.depth_meters.hdf5, "
           "or rgb_cam_KK_frNNNN.png beside depth_plane_cam_KK_frNNNN.png",
)
