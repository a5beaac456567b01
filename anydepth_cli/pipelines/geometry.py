"""The geometry outputs of one photo: its camera (a JSON sidecar) and, on request, its point cloud and triangle mesh
(PLY or GLB), each recording the camera they were made with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from anydepth_cli.pipelines.anchor import AnchorFit
from anydepth_cli.geometry.camera import Intrinsics, camera_record, exif_focal_35mm, intrinsics_for
from anydepth_cli.geometry.pointcloud import PointCloud, build_point_cloud

SATURATED_SHARE = 0.05
"""The share of a metric map's valid pixels at the end of the model's range above which the photo is named."""
SATURATION_LEVEL = 0.99
"""A metric value at or above this fraction of `max_depth` sits at the range's end (the sigmoid saturates)."""


@dataclass(frozen=True)
class CameraOptions:
    """`--focal PX` or `--fov DEG` (else EXIF, else the default), and the model's name and, for metric models, its
    range's end in metres: recorded with the camera; and which geometry to write beside it."""

    fov: float | None = None
    focal: float | None = None
    model: str = ""
    max_depth: float | None = None
    anchor: AnchorSource | None = None
    """With `--metric-from`: where each map's anchoring fit is found."""
    cloud: bool = False
    mesh: bool = False
    glb: bool = False
    """Clouds and meshes as binary glTF (GLB) instead of PLY."""
    axes: str = "opengl"
    """The frame of clouds and meshes: `opengl` (y up, z toward the viewer) or `opencv` (y down, z forward)."""

    def paths(self, base: Path) -> dict[str, Path]:
        """The files of the photo whose outputs are named from `base` (`folder/photo`)."""
        suffix = ".glb" if self.glb else ".ply"
        paths = {"camera": base.with_name(base.name + "_camera.json")}
        if self.cloud:
            paths["cloud"] = base.with_name(base.name + suffix)
        if self.mesh:
            paths["mesh"] = base.with_name(base.name + "_mesh" + suffix)
        return paths


class AnchorSource(Protocol):
    """What made a relative map metric (`pipelines.anchored.AnchoredPredictor`)."""

    def fit_of(self, values: np.ndarray) -> AnchorFit | None: ...


@dataclass(frozen=True)
class PointCloudOptions:
    """Camera and cleaning settings for `--pointcloud`."""

    fov: float | None = None
    focal: float | None = None
    near: float | None = None
    far: float | None = None
    depth_at: tuple[int, int, float] | None = None
    edge_threshold: float | None = 0.05
    max_points: int | None = 2_000_000
    normals: bool = False


def photo_camera(photo: Path | BinaryIO | None, width: int, height: int, options: CameraOptions) -> Intrinsics:
    """The camera of an upright `width` × `height` photo (a file, or its bytes): `--focal`/`--fov`, else the photo's
    EXIF, else the default."""
    given = options.fov is not None or options.focal is not None
    exif = None if given or photo is None else exif_focal_35mm(photo)
    return intrinsics_for(width, height, fov=options.fov, focal=options.focal, exif_focal_35mm=exif)


def photo_record(photo: Path | BinaryIO | None, shape: tuple[int, int], kind: str,
                 options: CameraOptions) -> tuple[Intrinsics, dict[str, object]]:
    """The camera of a photo (a file, its bytes, or None: a video frame) with a map of `kind` and `shape` (height,
    width), and the record of it that sidecars, clouds, meshes and frame archives carry."""
    height, width = shape
    camera = photo_camera(photo, width, height, options)
    record = camera_record(camera, width, height, options.model, kind)
    if options.max_depth is not None:
        record["max_depth"] = options.max_depth
    return camera, record


def write_geometry(paths: dict[str, Path], photo: Path, image: np.ndarray, values: np.ndarray, kind: str,
                   camera_options: CameraOptions, settings: PointCloudOptions | None) -> str | None:
    """Write the camera sidecar (`paths["camera"]`) and the point cloud and mesh `camera_options` asks for
    (`paths["cloud"]`, `paths["mesh"]`), made
    with `settings`, of one photo and its map of `kind`; returns the note to show (what was made, a focal length
    set aside, a scene beyond the model's range, the anchoring fit)."""
    camera, record = photo_record(photo, values.shape, kind, camera_options)
    fit = camera_options.anchor.fit_of(values) if camera_options.anchor is not None else None
    if fit is not None:
        record["anchor"] = fit.record()
    write_camera_record(paths["camera"], record)
    anchored = f"anchored: {fit.describe()}" if fit is not None else None
    notes = [note for note in (anchored, camera.note, saturation_note(values, camera_options.max_depth)) if note]
    if "cloud" in paths:
        notes.append(write_cloud(paths["cloud"], image, values, kind, settings, camera, record, camera_options.axes))
    if "mesh" in paths:
        notes.append(write_mesh(paths["mesh"], image, values, kind, settings, camera, record, camera_options.axes))
    return "; ".join(notes) or None


def write_camera_record(path: Path, record: dict[str, object]) -> None:
    """The camera sidecar: `record` as JSON."""
    from anydepth_cli.io.writers import write_text

    write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def make_cloud(image: np.ndarray, values: np.ndarray, kind: str, settings: PointCloudOptions,
               camera: Intrinsics, axes: str = "opengl") -> PointCloud:
    """The point cloud of one RGB image and its map of `kind`, unprojected with `camera`, in the `axes` frame."""
    return build_point_cloud(
        image, values, camera, kind=kind, near=settings.near, far=settings.far, depth_at=settings.depth_at,
        edge_threshold=settings.edge_threshold, max_points=settings.max_points, normals=settings.normals,
        frame=axes,
    )


def make_point_cloud(image: np.ndarray, values: np.ndarray, kind: str, options: PointCloudOptions,
                     exif_focal_35mm: float | None = None) -> tuple[PointCloud, Intrinsics]:
    """The point cloud of one RGB image and its map of `kind`, and the camera it was unprojected with."""
    height, width = values.shape
    camera = intrinsics_for(width, height, fov=options.fov, focal=options.focal, exif_focal_35mm=exif_focal_35mm)
    return make_cloud(image, values, kind, options, camera), camera


def write_cloud(path: Path, image: np.ndarray, values: np.ndarray, kind: str, settings: PointCloudOptions,
                camera: Intrinsics, record: dict[str, object], axes: str) -> str:
    """Build and write one point cloud (PLY with `record` in its comments, or GLB with it in the scene's extras);
    what was done."""
    cloud = make_cloud(image, values, kind, settings, camera, axes)
    write_shape(path, cloud.points, cloud.colors, {**record, "axes": axes}, normals=cloud.normals)
    return f"{len(cloud.points):,} points, camera {camera.source}; {cloud.description}"


def write_mesh(path: Path, image: np.ndarray, values: np.ndarray, kind: str, settings: PointCloudOptions,
               camera: Intrinsics, record: dict[str, object], axes: str) -> str:
    """Build and write one triangle mesh (PLY or GLB, recording the camera as clouds do); what was done."""
    from anydepth_cli.geometry.mesh import build_mesh

    mesh = build_mesh(image, values, camera, kind=kind, near=settings.near, far=settings.far,
                      depth_at=settings.depth_at, edge_threshold=settings.edge_threshold,
                      max_vertices=settings.max_points, frame=axes)
    write_shape(path, mesh.vertices, mesh.colors, {**record, "axes": axes}, faces=mesh.faces)
    return f"mesh: {mesh.description}"


def write_shape(path: Path, vertices: np.ndarray, colors: np.ndarray, record: dict[str, object], *,
                normals: np.ndarray | None = None, faces: np.ndarray | None = None) -> None:
    """Points (with `faces`: a mesh) as GLB (`record` in the scene's extras; no normals) or as PLY (`record` in
    its comments), by `path`'s suffix."""
    if path.suffix == ".glb":
        from anydepth_cli.io.glb import write_glb

        write_glb(path, vertices, colors, faces, record)
    else:
        from anydepth_cli.io.ply import write_ply

        write_ply(path, vertices, colors, normals, comments=record_comments(record), faces=faces)


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
