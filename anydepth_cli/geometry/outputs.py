"""The geometry outputs of one photo: its camera (a JSON sidecar) and, on request, its point cloud, each recording
the camera they were made with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from anydepth_cli.geometry.camera import Intrinsics, camera_record, exif_focal_35mm, intrinsics_for
from anydepth_cli.geometry.pointcloud import PointCloud, build_point_cloud


@dataclass(frozen=True)
class CameraOptions:
    """`--focal PX` or `--fov DEG` (else EXIF, else the default) and the model's name, recorded with the camera."""

    fov: float | None = None
    focal: float | None = None
    model: str = ""


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
    write_text(paths["camera"], json.dumps(record, indent=1) + "\n")
    notes = [camera.note] if camera.note else []
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
    """`key value` lines of a camera record, for file formats that carry comments (PLY)."""
    return [f"{key} {json.dumps(value) if not isinstance(value, str) else value}" for key, value in record.items()]
