"""How fast a 1M-point cloud is written as PLY and as GLB, and a mesh of a 1M-pixel map (a benchmark).

    python benchmarks/geometry_writers.py              # 1,000,000 points, 5 repeats
    python benchmarks/geometry_writers.py --points 4000000 --repeats 3

Writes with the code `anydepth predict --pointcloud/--mesh [--glb]` uses (`io.ply.write_ply`, `io.glb.write_glb`),
into a temporary folder, from coloured points of a smooth synthetic surface; the formats alternate, so other load
on a shared machine affects all alike. Prints JSON: the median and fastest seconds of each, the file sizes, the
targets (PLY < 1 s, GLB < 2 s for 1M points) and whether they are met, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from anydepth_cli.geometry.camera import Intrinsics
from anydepth_cli.geometry.mesh import build_mesh
from anydepth_cli.io.glb import write_glb
from anydepth_cli.io.ply import write_ply

TARGETS = {"ply_points": 1.0, "glb_points": 2.0}


def surface(points: int) -> tuple[np.ndarray, np.ndarray]:
    """A square-ish depth map of about `points` pixels (a tilted wavy plane, 2–6 m) and its colours."""
    side = int(round(points ** 0.5))
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32) / side
    depth = (2 + 4 * rows + 0.2 * np.sin(12 * cols)).astype(np.float32)
    rgb = np.stack([rows * 255, cols * 255, (1 - rows) * 255], axis=-1).astype(np.uint8)
    return depth, rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    depth, rgb = surface(args.points)
    side = depth.shape[0]
    camera = Intrinsics(fx=side, fy=side, cx=(side - 1) / 2, cy=(side - 1) / 2, source="benchmark")
    mesh = build_mesh(rgb, depth, camera, kind="metric", max_vertices=None, sky_fraction=None)
    points, colors = mesh.vertices, mesh.colors
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        jobs = {
            "ply_points": (Path(folder) / "cloud.ply", lambda path: write_ply(path, points, colors)),
            "glb_points": (Path(folder) / "cloud.glb", lambda path: write_glb(path, points, colors)),
            "ply_mesh": (Path(folder) / "mesh.ply", lambda path: write_ply(path, points, colors, faces=mesh.faces)),
            "glb_mesh": (Path(folder) / "mesh.glb", lambda path: write_glb(path, points, colors, mesh.faces)),
        }
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.repeats):
            for name, (path, write) in jobs.items():
                start = time.perf_counter()
                write(path)
                times[name].append(time.perf_counter() - start)
        sizes = {name: path.stat().st_size for name, (path, _) in jobs.items()}
    result = {
        "points": len(points), "triangles": len(mesh.faces), "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "median_s": {name: round(statistics.median(t), 4) for name, t in times.items()},
        "fastest_s": {name: round(min(t), 4) for name, t in times.items()},
        "bytes": sizes,
        "targets_s": TARGETS,
        "targets_met": {name: statistics.median(times[name]) < limit for name, limit in TARGETS.items()},
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
