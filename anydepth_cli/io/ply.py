"""Writing point clouds as binary PLY files that Open3D, MeshLab, CloudCompare and Blender open."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from anydepth_cli.io.writers import atomic_write


def write_ply(
    path: Path,
    points: np.ndarray,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    comments: Sequence[str] = (),
    faces: np.ndarray | None = None,
) -> None:
    """Write N points (N×3), optional colours (N×3, 0–255) and normals (N×3) as a PLY file, with `comments` (one
    line each) in its header and, with `faces` (M×3 vertex indices), a `face` element of triangles (a mesh).

    Binary little-endian PLY 1.0 with one `vertex` element: float `x y z`, then float
    `nx ny nz` if normals are given, then uchar `red green blue` if colours are given.
    N may be 0. Written atomically (see `atomic_write`); OSErrors become OutputError.
    """
    points = _columns(points, "points")
    count = len(points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    columns = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
    if normals is not None:
        normals = _columns(normals, "normals", count)
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        columns.update(nx=normals[:, 0], ny=normals[:, 1], nz=normals[:, 2])
    if colors is not None:
        colors = _columns(colors, "colors", count)
        if count and (colors.min() < 0 or colors.max() > 255):
            raise ValueError("colors must be in 0..255")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        columns.update(red=colors[:, 0], green=colors[:, 1], blue=colors[:, 2])

    triangles = None if faces is None else _triangles(faces, count)
    vertices = np.empty(count, dtype=np.dtype(fields))
    for name, values in columns.items():
        vertices[name] = values
    ply_type = {"<f4": "float", "u1": "uchar"}
    header = "".join(
        [
            "ply\n",
            "format binary_little_endian 1.0\n",
            "comment written by anydepth-cli\n",
            *(f"comment {' '.join(line.split())}\n" for line in comments),
            f"element vertex {count}\n",
            *(f"property {ply_type[kind]} {name}\n" for name, kind in fields),
            *(() if triangles is None else (f"element face {len(triangles)}\n",
                                            "property list uchar int vertex_indices\n")),
            "end_header\n",
        ]
    ).encode("ascii")

    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            handle.write(header)
            handle.write(vertices.view(np.uint8))  # the whole vertex block at once, no copy
            if triangles is not None:
                handle.write(triangles.view(np.uint8))

    atomic_write(Path(path), write)


def _columns(values: np.ndarray, name: str, count: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[1] != 3 or (count is not None and len(array) != count):
        expected = "N×3" if count is None else f"{count}×3"
        raise ValueError(f"{name} must be {expected}, got shape {array.shape}")
    return array


def _triangles(faces: np.ndarray, count: int) -> np.ndarray:
    """PLY face records (a count of 3, then three little-endian int32 indices) of M×3 `faces` into `count` vertices."""
    faces = _columns(faces, "faces")
    if len(faces) and (faces.min() < 0 or faces.max() >= count):
        raise ValueError(f"face indices must be in 0..{count - 1}")
    records = np.empty(len(faces), dtype=np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    records["n"] = 3
    records["v"] = faces
    return records
