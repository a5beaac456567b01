"""Make the README's mechanism figures with anydepth's own code on synthetic scenes of known depth.

    python tools/make_readme_figures.py            # writes assets/tiling_before_after.png, assets/pointcloud.png

The published weights cannot be downloaded where this project is built, so these figures show
what the tiling and point-cloud code do to a prediction, using an oracle in place of the
network: it returns the scene's true disparity, computed at the network's input resolution
(so a single pass is blurry, as a real one is) and with its own scale and shift each call.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from anydepth_cli.inference.align import fit_scale_shift  # noqa: E402
from anydepth_cli.inference.tiling import TileConfig, predict_tiled  # noqa: E402
from anydepth_cli.io.ply import write_ply  # noqa: E402
from anydepth_cli.io.writers import colorize  # noqa: E402
from anydepth_cli.geometry.camera import intrinsics_for  # noqa: E402
from anydepth_cli.geometry.pointcloud import build_point_cloud  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from render_pointcloud import read_vertices, render  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def detailed_scene(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Disparity of a slanted wall carrying a grid of small domes and thin vertical posts."""
    disparity = 0.4 + 0.3 * v
    cell_u, cell_v = (u * 24) % 1 - 0.5, (v * 18) % 1 - 0.5
    dome = np.sqrt(np.clip(0.09 - cell_u**2 - cell_v**2, 0, None))
    posts = (np.abs(((u * 60) % 1) - 0.5) < 0.08) & (v > 0.55)
    return disparity + 0.8 * dome + np.where(posts, 0.35, 0.0)


class Oracle:
    """Stand-in network: true disparity at `input_size` resolution, then its own affine per call."""

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size
        self.output_kind = "disparity"
        self.rng = np.random.default_rng(0)

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        results = []
        for image in images:
            height, width = image.shape[:2]
            scale = min(1.0, self.input_size / min(height, width))
            small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            truth = detailed_scene(small[..., 0], small[..., 1]).astype(np.float32)
            truth = cv2.resize(truth, (width, height), interpolation=cv2.INTER_LINEAR)
            results.append(truth * self.rng.uniform(0.5, 2.0) + self.rng.uniform(-1, 1))
        return results


def tiling_figure(path: Path) -> None:
    height, width = 1536, 2048
    image = np.empty((height, width, 3), dtype=np.float32)
    image[..., 0] = ((np.arange(width) + 0.5) / width)[None, :]
    image[..., 1] = ((np.arange(height) + 0.5) / height)[:, None]
    image[..., 2] = 0.5
    truth = detailed_scene(image[..., 0], image[..., 1])
    oracle = Oracle(input_size=256)
    single = oracle.predict_batch([image])[0]
    tiled = predict_tiled(image, oracle, TileConfig(tile_size=512, overlap=128, batch_size=4)).values
    crop = (slice(700, 1150), slice(300, 900))
    value_range = (float(np.percentile(truth, 1)), float(np.percentile(truth, 99)))
    panels = [("one pass at 256 px", single), ("tiled (--tile-size 512)", tiled), ("true disparity", truth)]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, (title, disparity) in zip(axes, panels):
        aligned = fit_scale_shift(disparity, truth).apply(disparity)
        axis.imshow(colorize(aligned[crop], value_range=value_range))
        error = np.mean(np.abs(aligned - truth) / truth) * 100
        axis.set_title(f"{title}\nAbsRel {error:.2f} %" if disparity is not truth else title)
        axis.axis("off")
    figure.suptitle("Tiling on a synthetic 3 MP scene (crop shown); oracle network, see tools/make_readme_figures.py")
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    figure.savefig(path, dpi=90)


def pointcloud_figure(path: Path) -> None:
    height, width = 480, 640
    camera = intrinsics_for(width, height, fov=60)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    ray_x, ray_y = (cols - camera.cx) / camera.fx, (rows - camera.cy) / camera.fy
    floor = np.where(ray_y > 0.02, 1.2 / np.maximum(ray_y, 1e-6), np.inf)
    depth = np.minimum(floor, 9.0)
    centre, radius = np.array([0.3, 0.55, 4.0]), 0.65
    ray = np.stack([ray_x, ray_y, np.ones_like(ray_x)], axis=-1)
    a, b = (ray**2).sum(-1), -2 * ray @ centre
    disc = b**2 - 4 * a * (centre @ centre - radius**2)
    hit = (-b - np.sqrt(np.clip(disc, 0, None))) / (2 * a)
    depth = np.where((disc > 0) & (hit < depth), hit, depth)
    checker = ((cols // 40 + rows // 40) % 2).astype(np.float32)
    rgb = (np.stack([0.9 - 0.4 * checker, 0.6 + 0.2 * checker, 0.35 + 0.5 * (rows / height)], -1) * 255).astype(np.uint8)
    cloud = build_point_cloud(rgb, (1.0 / depth).astype(np.float32), camera, kind="disparity",
                              near=float(depth.min()), far=float(depth.max()), max_points=200_000, sky_fraction=None)
    with tempfile.TemporaryDirectory() as folder:
        ply = Path(folder) / "scene.ply"
        write_ply(ply, cloud.points, cloud.colors)
        render(read_vertices(ply), path, elev=20, azim=-60, size=900, max_points=200_000)


def main() -> int:
    ASSETS.mkdir(exist_ok=True)
    tiling_figure(ASSETS / "tiling_before_after.png")
    pointcloud_figure(ASSETS / "pointcloud.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
