"""The geometry outputs of one photo: its camera (a JSON sidecar) and, on request, its point cloud, each recording
the camera they were made with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from anydepth_cli.geometry.anchor import AnchorFit
from anydepth_cli.geometry.camera import Intrinsics, camera_record, exif_focal_35mm, intrinsics_for
from anydepth_cli.geometry.pointcloud import PointCloud, build_point_cloud


SATURATED_SHARE = 0.05
"""The share of a metric map's valid pixels at the end of the model's range above which the photo is named."""
SATURATION_LEVEL = 0.99
"""A metric value at or above this fraction of `max_depth` sits at the range's end (the sigmoid saturates)."""


@dataclass(frozen=True)
class CameraOptions:
    """`--focal PX` or `--fov DEG` (else EXIF, else the default), and the model's name and, for metric models, its
    range's end in metres: recorded with the camera."""

    fov: float | None = None
    focal: float | None = None
    model: str = ""
    max_depth: float | None = None
    anchor: AnchorSource | None = None
    """With `--metric-from`: where each map's anchoring fit is found."""


class AnchorSource(Protocol):
    """What made a relative map metric (`pipelines.anchored.AnchoredPredictor`)."""

    def fit_of(self, values: np.ndarray) -> AnchorFit | None: ...


class CloudSettings(Protocol):
    """The cleaning and scaling settings of `--pointcloud` (`pipelines.photos.PointCloudOptions`)."""

    near: float | None
    far: float | None
    depth_at: tuple[int, int, float] | None
    edge_threshold: float | None
    max_points: int | None
    normals: bool


def photo_camera(photo: Path | None, width: int, height: int, options: CameraOptions) -> Intrinsics:
    """The camera of an upright `width` × `height` photo: `--focal`/`--fov`, else the photo's EXIF, else the default."""
    given = options.fov is not None or options.focal is not None
    exif = None if given or photo is None else exif_focal_35mm(photo)
    return intrinsics_for(width, height, fov=options.fov, focal=options.focal, exif_focal_35mm=exif)


def write_geometry(paths: dict[str, Path], photo: Path, image: np.ndarray, values: np.ndarray, kind: str,
                   camera_options: CameraOptions, cloud: CloudSettings | None) -> str | None:
    """Write the camera sidecar (`paths["camera"]`) and, with `cloud`, the PLY point cloud (`paths["ply"]`) of one
    photo and its map of `kind`; returns the note to show (the cloud made, a focal length set aside)."""
    from anydepth_cli.io.writers import write_text

    height, width = values.shape
    camera = photo_camera(photo, width, height, camera_options)
    record = camera_record(camera, width, height, camera_options.model, kind)
    if camera_options.max_depth is not None:
        record["max_depth"] = camera_options.max_depth
    fit = camera_options.anchor.fit_of(values) if camera_options.anchor is not None else None
    if fit is not None:
        record["anchor"] = fit.record()
    write_text(paths["camera"], json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    anchored = f"anchored: {fit.describe()}" if fit is not None else None
    notes = [note for note in (anchored, camera.note, saturation_note(values, camera_options.max_depth)) if note]
    if cloud is not None:
        notes.append(write_cloud(paths["ply"], image, values, kind, cloud, camera, record))
    return "; ".join(notes) or None


def make_cloud(image: np.ndarray, values: np.ndarray, kind: str, settings: CloudSettings,
               camera: Intrinsics) -> PointCloud:
    """The point cloud of one RGB image and its map of `kind`, unprojected with `camera`."""
    return build_point_cloud(
        image, values, camera, kind=kind, near=settings.near, far=settings.far, depth_at=settings.depth_at,
        edge_threshold=settings.edge_threshold, max_points=settings.max_points, normals=settings.normals,
    )


def write_cloud(path: Path, image: np.ndarray, values: np.ndarray, kind: str, settings: CloudSettings,
                camera: Intrinsics, record: dict[str, object]) -> str:
    """Build and write one PLY point cloud with `record` in its comments; what was done."""
    from anydepth_cli.io.ply import write_ply

    cloud = make_cloud(image, values, kind, settings, camera)
    write_ply(path, cloud.points, cloud.colors, cloud.normals, comments=record_comments(record))
    return f"{len(cloud.points):,} points, camera {camera.source}; {cloud.description}"


def record_comments(record: dict[str, object]) -> list[str]:
    """`key JSON` lines of a camera record (ASCII: PLY headers are), for file formats that carry comments."""
    return [f"{key} {json.dumps(value)}" for key, value in record.items()]


def saturation_note(values: np.ndarray, max_depth: float | None) -> str | None:
    """A warning when more than SATURATED_SHARE of a metric map's valid pixels sit at `max_depth` (the scene reaches
    beyond the model's range); None otherwise, and for maps without a range."""
    if max_depth is None:
        return None
    valid = values[np.isfinite(values) & (values > 0)]
    if not valid.size:
        return None
    share = np.count_nonzero(valid >= SATURATION_LEVEL * max_depth) / valid.size
    if share <= SATURATED_SHARE:
        return None
    return (f"warning: {100 * share:.1f}% of the pixels sit at the model's {max_depth:g} m limit: the scene reaches "
            "beyond its range, and those depths are only a floor")
