"""PLY files, read back by an independent reader; and the render tool that draws them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth_cli.errors import OutputError
from anydepth_cli.io import ply
from anydepth_cli.io.ply import write_ply

REPO = Path(__file__).resolve().parents[1]
PLY_TYPES = {"float": "<f4", "uchar": "u1"}


def read_ply(path: Path) -> tuple[list[str], np.ndarray]:
    """Header lines and the vertex records, parsed from scratch."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    elements = [line.split() for line in header if line.startswith("element ")]
    assert [e[1] for e in elements] == ["vertex"]
    count = int(elements[0][2])
    properties = [line.split() for line in header if line.startswith("property ")]
    dtype = np.dtype([(name, PLY_TYPES[kind]) for _, kind, name in properties])
    assert len(data) == end + count * dtype.itemsize
    return header, np.frombuffer(data, dtype=dtype, count=count, offset=end)


def cloud(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    normals = rng.normal(size=(n, 3)).astype(np.float32)
    return points, colors, normals


def columns(vertices: np.ndarray, names: str) -> np.ndarray:
    return np.stack([vertices[name] for name in names.split()], axis=1)


@pytest.mark.parametrize("n", [0, 1, 2_000_000])
def test_points_colours_and_normals_read_back_exactly(tmp_path, n):
    points, colors, normals = cloud(n)
    path = tmp_path / "cloud.ply"
    write_ply(path, points, colors, normals)
    header, vertices = read_ply(path)
    assert header[3:] == [
        f"element vertex {n}",
        "property float x",
        "property float y",
        "property float z",
        "property float nx",
        "property float ny",
        "property float nz",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ]
    np.testing.assert_array_equal(columns(vertices, "x y z"), points)
    np.testing.assert_array_equal(columns(vertices, "nx ny nz"), normals)
    np.testing.assert_array_equal(columns(vertices, "red green blue"), colors)
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]  # no temp file left


def test_points_only_and_float64_input(tmp_path):
    points = np.array([[1.5, -2.25, 3.0]])
    write_ply(tmp_path / "one.ply", points)
    header, vertices = read_ply(tmp_path / "one.ply")
    assert [line for line in header if line.startswith("property")] == [
        "property float x",
        "property float y",
        "property float z",
    ]
    np.testing.assert_array_equal(columns(vertices, "x y z"), points.astype(np.float32))


@pytest.mark.parametrize(
    "arrays",
    [
        {"points": np.zeros((4, 2))},
        {"points": np.zeros((4, 3)), "colors": np.zeros((3, 3), np.uint8)},
        {"points": np.zeros((4, 3)), "normals": np.zeros((4, 4))},
        {"points": np.zeros((1, 3)), "colors": np.full((1, 3), 256)},
    ],
)
def test_bad_shapes_and_colours_are_rejected(tmp_path, arrays):
    with pytest.raises(ValueError):
        write_ply(tmp_path / "bad.ply", **arrays)
    assert not list(tmp_path.iterdir())


def test_interrupted_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "cloud.ply"
    path.write_bytes(b"old")

    class Interrupting:
        def __init__(self, file, mode):
            self.handle = open(file, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data)
            raise KeyboardInterrupt

    monkeypatch.setattr(ply, "open", Interrupting, raising=False)
    with pytest.raises(KeyboardInterrupt):
        write_ply(path, *cloud(10))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["cloud.ply"]


def test_unwritable_location_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError):
        write_ply(blocker / "cloud.ply", *cloud(3))


def test_render_tool_draws_the_cloud(tmp_path):
    # A red and a blue patch side by side.
    u, v = np.meshgrid(np.linspace(-1, 1, 60), np.linspace(-1, 1, 40))
    points = np.stack([u.ravel(), v.ravel(), -3 - 0.3 * u.ravel()], axis=1)
    colors = np.where(points[:, :1] < 0, [[220, 30, 30]], [[30, 30, 220]]).astype(np.uint8)
    write_ply(tmp_path / "cloud.ply", points, colors)
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "render_pointcloud.py"), str(tmp_path / "cloud.ply"),
         str(tmp_path / "cloud.png"), "--size", "320"],
        check=True,
        timeout=60,
    )
    image = np.asarray(Image.open(tmp_path / "cloud.png").convert("RGB")).astype(int)
    assert image.shape == (320, 320, 3)
    red = (image[..., 0] > 150) & (image[..., 2] < 100)
    blue = (image[..., 2] > 150) & (image[..., 0] < 100)
    assert red.sum() > 500 and blue.sum() > 500
