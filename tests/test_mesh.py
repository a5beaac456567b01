"""Meshes and GLB: triangles cut at depth discontinuities, vertex colours and metres that survive being read back
by trimesh and plyfile, and both axis conventions."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image
from plyfile import PlyData

from anydepth_cli.geometry.camera import Intrinsics
from anydepth_cli.geometry.mesh import build_mesh
from conftest import run_cli
from metric_fixture import ARCH, META, build_checkpoint, cases

CAMERA = Intrinsics(fx=80.0, fy=80.0, cx=29.5, cy=19.5, source="test")


def step_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 40×60 metric map: a wall at 4 m with a box at 2 m in its middle, and a colour per pixel."""
    depth = np.full((40, 60), 4.0, np.float32)
    depth[10:30, 20:40] = 2.0
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = np.arange(60, dtype=np.uint8)[None] * 4
    rgb[..., 1] = np.arange(40, dtype=np.uint8)[:, None] * 6
    return depth, rgb


def test_the_mesh_is_cut_at_the_depth_discontinuity_and_faces_the_camera():
    depth, rgb = step_scene()
    mesh = build_mesh(rgb, depth, CAMERA, kind="metric", max_vertices=None, sky_fraction=None, frame="opencv")
    assert len(mesh.vertices) == depth.size
    z = mesh.vertices[:, 2][mesh.faces]
    assert np.all(z.max(axis=1) == z.min(axis=1))  # no triangle bridges the 2 m step
    full = 2 * 39 * 59
    cut = 2 * (20 + 20) + 2 * (20 + 20) - 4  # quads straddling the box outline... at most this many
    assert full - cut - 8 <= len(mesh.faces) < full
    normals = np.cross(*(mesh.vertices[mesh.faces[:, k]] - mesh.vertices[mesh.faces[:, 0]] for k in (1, 2)))
    centres = mesh.vertices[mesh.faces].mean(axis=1)
    assert np.all(np.einsum("ij,ij->i", normals, centres) < 0)  # every triangle faces the camera at the origin
    gl = build_mesh(rgb, depth, CAMERA, kind="metric", max_vertices=None, sky_fraction=None, frame="opengl")
    assert np.array_equal(gl.vertices * [1, -1, -1], mesh.vertices) and np.array_equal(gl.faces, mesh.faces)


def test_max_vertices_takes_every_nth_pixel():
    depth, rgb = step_scene()
    mesh = build_mesh(rgb, depth, CAMERA, kind="metric", max_vertices=700, sky_fraction=None)
    assert len(mesh.vertices) == 20 * 30 and "every 2" in mesh.description


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mesh")
    checkpoint = build_checkpoint(folder)
    photo, reference = cases()[0]
    Image.fromarray(photo).save(folder / "crop.png")

    def predict(name: str, *options: str):
        out = folder / name
        done = run_cli("predict", folder / "crop.png", "-o", out, "--checkpoint", checkpoint, "--arch", ARCH,
                       "--input-size", str(META["input_size"]), "--device", "cpu", "--precision", "fp32", "--focal", "200",
                       *options)
        assert done.returncode == 0, done.stderr
        return out

    return predict, photo, reference


def test_ply_mesh_and_cloud_read_back_with_plyfile(run):
    predict, photo, reference = run
    out = predict("ply", "--pointcloud", "--mesh", "--axes", "opencv", "--edge-threshold", "0")
    cloud = PlyData.read(out / "crop.ply")["vertex"]
    mesh = PlyData.read(out / "crop_mesh.ply")
    assert len(cloud.data) == reference.size  # nothing dropped with --edge-threshold 0 and a near scene
    assert np.allclose(np.sort(cloud["z"]), np.sort(reference.ravel()), rtol=1e-5)  # metres, opencv: z = d
    vertices, faces = mesh["vertex"], np.stack(mesh["face"]["vertex_indices"])
    assert len(vertices.data) == reference.size and faces.shape == (2 * 96 * 300, 3)
    colours = np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1)
    assert np.array_equal(np.sort(colours, axis=0), np.sort(photo.reshape(-1, 3), axis=0))
    assert 'axes "opencv"' in mesh.comments and 'units "metres"' in mesh.comments


def test_glb_points_and_mesh_keep_their_colours_and_metres(run):
    predict, photo, reference = run
    out = predict("glb", "--pointcloud", "--mesh", "--glb", "--edge-threshold", "0")
    points = trimesh.load(out / "crop.glb")
    cloud = next(iter(points.geometry.values()))
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == reference.size
    assert np.allclose(np.sort(-cloud.vertices[:, 2]), np.sort(reference.ravel()), rtol=1e-5)  # opengl: z = -d
    colours = np.asarray(cloud.colors)[:, :3]
    assert colours.std() > 0
    assert np.array_equal(np.sort(colours, axis=0), np.sort(photo.reshape(-1, 3), axis=0))
    assert points.metadata["units"] == "metres" and points.metadata["fx"] == 200
    mesh_scene = trimesh.load(out / "crop_mesh.glb")
    mesh = next(iter(mesh_scene.geometry.values()))
    assert isinstance(mesh, trimesh.Trimesh) and len(mesh.faces) > 0
    mesh_colours = np.asarray(mesh.visual.vertex_colors)[:, :3]
    assert mesh_colours.std() > 0 and len(mesh_colours) == len(mesh.vertices)


def test_glb_alone_is_a_usage_error(tmp_path):
    Image.fromarray(cases()[0][0]).save(tmp_path / "crop.png")
    done = run_cli("predict", tmp_path / "crop.png", "-o", tmp_path / "out", "--glb")
    assert done.returncode == 2 and "--pointcloud or --mesh" in done.stderr
