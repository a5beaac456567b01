"""Render a PLY point cloud to a PNG with matplotlib (used for the README's pictures).

    python tools/render_pointcloud.py cloud.ply out.png [--elev 18 --azim -70 --size 900]

Reads binary PLY files whose first element is `vertex` with scalar properties x y z and,
optionally, red green blue (as `anydepth pointcloud` writes them, in its default frame:
x right, y up, z toward the viewer). Without colours, points are coloured by depth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PLY_SCALARS = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def read_vertices(path: Path) -> np.ndarray:
    """The `vertex` records of a binary PLY file as a structured array."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise SystemExit(f"{path}: not a PLY file")
        order, count, fields, element = None, None, [], None
        for raw in handle:
            words = raw.decode("ascii").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(words[1])
                if order is None:
                    raise SystemExit(f"{path}: only binary PLY files are supported, not {words[1]}")
            elif words[0] == "element":
                element = words[1]
                if count is None:
                    if element != "vertex":
                        raise SystemExit(f"{path}: the first element must be 'vertex', not {element!r}")
                    count = int(words[2])
            elif words[0] == "property" and element == "vertex":
                if words[1] == "list":
                    raise SystemExit(f"{path}: list properties on vertices are not supported")
                fields.append((words[2], order + PLY_SCALARS[words[1]]))
        return np.fromfile(handle, dtype=np.dtype(fields), count=count)


def render(vertices: np.ndarray, out: Path, elev: float, azim: float, size: int, max_points: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(vertices) > max_points:
        keep = np.random.default_rng(0).choice(len(vertices), max_points, replace=False)
        vertices = vertices[np.sort(keep)]
    # Matplotlib's 3-D axes have z up: plot (x, -z, y) so that y is up and depth recedes.
    xyz = np.stack([vertices["x"], -vertices["z"], vertices["y"]], axis=1).astype(np.float64)
    if {"red", "green", "blue"} <= set(vertices.dtype.names):
        colors = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1) / 255.0
    else:
        depth = xyz[:, 1] - xyz[:, 1].min(initial=0.0)
        colors = matplotlib.colormaps["viridis_r"](depth / max(depth.max(initial=0.0), 1e-9))

    dpi = 100
    fig = plt.figure(figsize=(size / dpi, size / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1), projection="3d")
    # Marker areas (in points²) that together cover about 40 % of the picture.
    area = max(0.3, 0.4 * (size * 72 / dpi) ** 2 / max(len(xyz), 1))
    ax.scatter(*xyz.T, c=colors, s=area, marker="o", linewidths=0, depthshade=False)
    if len(xyz):
        low, high = xyz.min(axis=0), xyz.max(axis=0)
        span = np.maximum(high - low, 1e-3 * max((high - low).max(), 1e-9))
        ax.set(xlim=(low[0], low[0] + span[0]), ylim=(low[1], low[1] + span[1]))
        ax.set(zlim=(low[2], low[2] + span[2]))
        ax.set_box_aspect(span)  # equal scale on all three axes
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ply", type=Path, help="input point cloud (.ply)")
    parser.add_argument("png", type=Path, help="output picture (.png)")
    parser.add_argument("--elev", type=float, default=18.0, help="view elevation in degrees")
    parser.add_argument(
        "--azim", type=float, default=-70.0, help="view azimuth in degrees (-90: from the camera)"
    )
    parser.add_argument("--size", type=int, default=900, help="picture width and height in pixels")
    parser.add_argument(
        "--max-points", type=int, default=300_000, help="points drawn at most (a seeded sample)"
    )
    args = parser.parse_args()
    render(read_vertices(args.ply), args.png, args.elev, args.azim, args.size, args.max_points)


if __name__ == "__main__":
    main()
