"""Small fake copies of the five standard evaluation sets in their real layouts (as tars and extracted), and the
reference protocol written out independently of the package, for the benchmark tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

LOCATIONS = {
    "nyu": "nyuv2/nyu_labeled_extracted.tar",
    "kitti": "kitti/kitti_eigen_split_test.tar",
    "eth3d": "eth3d/eth3d.tar",
    "scannet": "scannet/scannet_val_sampled_800_1.tar",
    "diode": "diode/diode_val.tar",
}
RANGES = {"nyu": (1e-3, 10.0), "kitti": (1e-5, 80.0), "eth3d": (1e-5, np.inf), "scannet": (1e-3, 10.0),
          "diode": (0.6, 350.0)}
ETH3D_SIZE = (40, 1100)
"""A stand-in for ETH3D's 4032×6048, wide enough (> 1024 columns) that the fit is thinned."""


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _depth(height: int, width: int, seed: int, low: float, high: float) -> np.ndarray:
    """A slanted plane with bumps, in metres, spanning about [low, high]."""
    rng = np.random.default_rng(seed + 100)
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    plane = low + (high - low) * (0.3 * x + 0.7 * y)
    return (plane * (1 + 0.05 * rng.standard_normal((height, width)))).astype(np.float32)


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array[..., ::-1] if array.ndim == 3 else array)
    assert ok
    return data.tobytes()


def _jpg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _holes(depth: np.ndarray, seed: int, fraction: float = 0.2) -> np.ndarray:
    """Depth with a random `fraction` of pixels set to 0 (no measurement)."""
    rng = np.random.default_rng(seed + 200)
    return np.where(rng.random(depth.shape) < fraction, 0, depth)


def nyu_files() -> dict[str, bytes]:
    files = {}
    for split, scene, index in (("test", "kitchen_0004", 1), ("test", "office_0005", 9), ("train", "office_0003", 3)):
        base = f"{split}/{scene}"
        depth = _holes(_depth(480, 640, index, 0.5, 12.0), index)  # some beyond 10 m: out of range
        files[f"{base}/rgb_{index:04d}.png"] = _png(_photo(480, 640, index))
        files[f"{base}/depth_{index:04d}.png"] = _png(np.round(depth * 1000).astype(np.uint16))
        files[f"{base}/filled_{index:04d}.png"] = _png(np.full((480, 640), 3000, np.uint16))
    return files


def kitti_files() -> dict[str, bytes]:
    files = {}
    for drive, frame, size in (("2011_09_26_drive_0002_sync", 69, (375, 1242)), ("2011_10_03_drive_0047_sync", 448, (376, 1241)),
                               ("2011_09_26_drive_0009_sync", 7, (375, 1242))):
        date = drive[:10]
        files[f"{date}/{drive}/image_02/data/{frame:010d}.png"] = _png(_photo(*size, frame))
        if frame != 7:  # a frame without annotated depth, as 45 of the split's have
            sparse = _holes(_depth(*size, frame, 2.0, 90.0), frame, 0.8)
            files[f"{drive}/proj_depth/groundtruth/image_02/{frame:010d}.png"] = _png(np.round(sparse * 256).astype(np.uint16))
    return files


def eth3d_files() -> dict[str, bytes]:
    files = {}
    for scene, name, seed in (("office", "DSC_0219.JPG", 1), ("electro", "DSC_9302.JPG", 2)):
        depth = _depth(*ETH3D_SIZE, seed, 1.0, 30.0)
        depth[_holes(depth, seed, 0.3) == 0] = np.inf
        files[f"rgb/{scene}/images/dslr_images/{name}"] = _jpg(_photo(*ETH3D_SIZE, seed))
        files[f"depth/{scene}_dslr_depth/{scene}/ground_truth_depth/dslr_images/{name}"] = depth.astype("<f4").tobytes()
    return files


def scannet_files() -> dict[str, bytes]:
    files = {}
    for scene, frame, seed in (("scene0406_02", "000300", 1), ("scene0088_02", "001100", 2)):
        depth = _holes(_depth(96, 128, seed, 0.5, 6.0), seed)
        files[f"{scene}/color/{frame}.jpg"] = _jpg(_photo(96, 128, seed))
        files[f"{scene}/depth/{frame}.png"] = _png(np.round(depth * 1000).astype(np.uint16))
    return files


def diode_files() -> dict[str, bytes]:
    files = {}
    for base, seed in (("indoors/scene_00021/scan_00189/00021_00189_indoors_200_010", 1),
                       ("outdoor/scene_00024/scan_00202/00024_00202_outdoor_110_020", 2)):
        depth = _depth(96, 128, seed, 0.3, 400.0)  # the mask, not the range, decides: some under 0.6 m and over 350 m
        mask = _holes(np.ones_like(depth), seed, 0.25)
        files[f"{base}.png"] = _png(_photo(96, 128, seed))
        files[f"{base}_depth.npy"] = _npy(depth[..., None])
        files[f"{base}_depth_mask.npy"] = _npy(mask.astype(np.float32))
    return files


MAKERS = {"nyu": nyu_files, "kitti": kitti_files, "eth3d": eth3d_files, "scannet": scannet_files, "diode": diode_files}


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    """A tar whose members are named `./<path>`, as the standard evaluation tars are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        archive.add(str(path.parent), arcname=".", recursive=False)
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def make_root(root: Path, as_tar: bool, names: tuple[str, ...] = tuple(MAKERS)) -> Path:
    """A data root with the named sets at their standard places: tars, or extracted (NYU and KITTI into
    `FOLDER/NAME/`, the others into `FOLDER/` itself)."""
    for name in names:
        location = root / LOCATIONS[name]
        if as_tar:
            write_tar(location, MAKERS[name]())
        else:
            write_folder(location.with_suffix("") if name in ("nyu", "kitti") else location.parent, MAKERS[name]())
    return root


# ----------------------------------------------------------------------------- the reference protocol, independently


def reference_ground_truth(name: str, files: dict[str, bytes], rgb: str, depth: str, mask: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The ground truth and valid pixels as the reference protocol defines them, read with PIL/numpy directly."""
    low, high = RANGES[name]
    if name == "eth3d":
        width, height = Image.open(io.BytesIO(files[rgb])).size
        gt = np.frombuffer(files[depth], dtype=np.float32).reshape(height, width).copy()
        gt[gt == np.inf] = 0
    elif name == "diode":
        gt = np.load(io.BytesIO(files[depth])).squeeze()
        return gt, np.load(io.BytesIO(files[mask])).squeeze().astype(bool)
    else:
        gt = np.asarray(Image.open(io.BytesIO(files[depth]))).astype(np.float64) / (256.0 if name == "kitti" else 1000.0)
    if name == "kitti":
        height, width = gt.shape
        top, left = height - 352, int((width - 1216) / 2)
        gt = gt[top: top + 352, left: left + 1216]
    valid = (gt > low) & (gt < high)
    region = np.zeros_like(valid)
    if name == "nyu":
        region[45:471, 41:601] = True
    elif name == "kitti":
        h, w = gt.shape
        region[int(0.3324324 * h): int(0.91351351 * h), int(0.0359477 * w): int(0.96405229 * w)] = True
    else:
        region[:] = True
    return gt, valid & region


def reference_scores(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, kind: str, name: str) -> dict[str, float]:
    """AbsRel and δ1 of a raw prediction under the reference protocol (least squares by numpy's lstsq, ETH3D's
    fit on tensors thinned by torch's own nearest interpolate)."""
    low, high = RANGES[name]
    target, use = gt, valid
    if kind == "disparity":
        positive = gt > 0
        target = np.zeros_like(gt, dtype=np.float64)
        target[positive] = 1.0 / gt[positive]
        use = valid & positive & (pred > 0)
    fit_pred, fit_target = pred, target
    if name == "eth3d":
        factor = float(np.min(1024 / np.array(gt.shape)))
        if factor < 1:
            def thin(a):
                return F.interpolate(torch.as_tensor(np.asarray(a, dtype=np.float64))[None], scale_factor=factor,
                                     mode="nearest")[0].numpy()
            fit_pred, fit_target, use = thin(pred), thin(target), thin(use.astype(np.float64)) > 0
    design = np.stack([fit_pred[use], np.ones(int(use.sum()))], axis=1).astype(np.float64)
    scale, shift = np.linalg.lstsq(design, fit_target[use].astype(np.float64), rcond=None)[0]
    aligned = pred.astype(np.float64) * scale + shift
    if kind == "disparity":
        aligned = 1.0 / np.clip(aligned, 1e-3, None)
    aligned = np.clip(np.clip(aligned, low, high), 1e-6, None)
    d, g = aligned[valid], gt[valid].astype(np.float64)
    return {"abs_rel": float(np.mean(np.abs(d - g) / g)), "delta1": float(np.mean(np.maximum(d / g, g / d) < 1.25)),
            "scale": float(scale), "shift": float(shift)}
