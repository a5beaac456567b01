"""Geometry of point clouds: intrinsics, the depth rule for depth and disparity maps, unprojection, filters."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from anydepth_cli.errors import UsageError
from anydepth_cli.geometry.camera import Intrinsics, exif_focal_35mm, intrinsics_for, unproject
from anydepth_cli.geometry.depth_rule import DepthRule, to_metric_depth
from anydepth_cli.geometry.pointcloud import build_point_cloud, edge_mask
from anydepth_cli.pipelines.geometry import CameraOptions, PointCloudOptions, photo_record, write_cloud

WIDTH, HEIGHT, FOCAL = 160, 120, 150.0
KINDS = ("depth", "disparity")
OTHER_KIND = {"depth": "disparity", "disparity": "depth"}


def camera() -> Intrinsics:
    return intrinsics_for(WIDTH, HEIGHT, focal=FOCAL)


def rays(intrinsics: Intrinsics) -> np.ndarray:
    """H×W×3 float64 ray directions with z = 1 through every pixel centre."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    x, y = (u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy
    return np.stack([x, y, np.ones_like(u)], axis=-1)


PLANE_POINT = np.array([0.2, 0.1, 5.0])
PLANE_NORMAL = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])  # faces the camera


def plane_depth() -> np.ndarray:
    r = rays(camera())
    return (PLANE_NORMAL @ PLANE_POINT) / (r @ PLANE_NORMAL)


SPHERE_CENTRE, SPHERE_RADIUS = np.array([0.3, -0.2, 6.0]), 1.5


def sphere_depth() -> np.ndarray:
    """Depth of the nearest ray-sphere intersection; inf where the ray misses."""
    r = rays(camera())
    a = np.einsum("hwk,hwk->hw", r, r)
    b = r @ SPHERE_CENTRE
    c = SPHERE_CENTRE @ SPHERE_CENTRE - SPHERE_RADIUS**2
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (b - np.sqrt(disc)) / a
    return np.where(disc > 0, t, np.inf)


def exact(depth: np.ndarray, kind: str) -> np.ndarray:
    """The float32 map a perfect network of ``kind`` gives for a scene of this true depth."""
    with np.errstate(divide="ignore"):
        return (depth if kind == "depth" else 1 / depth).astype(np.float32)


def true_near_far(depth: np.ndarray, kind: str) -> tuple[float, float]:
    """The ``near``/``far`` that put the scene back at its true depth: the depths at the
    1st and 99th percentiles of its true ``kind`` values."""
    if kind == "depth":
        return tuple(float(p) for p in np.percentile(depth, [1, 99]))
    return tuple(1 / float(p) for p in np.percentile(1 / depth, [99, 1]))


class OracleNetwork:
    """A network that returns the true depth or disparity (its ``output_kind``) of one scene,
    under a random positive scale and shift on every call."""

    input_size = 518

    def __init__(self, depth: np.ndarray, output_kind: str, seed: int = 0) -> None:
        self.truth = exact(depth, output_kind).astype(np.float64)
        self.output_kind = output_kind
        self.rng = np.random.default_rng(seed)

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        maps = []
        for image in images:
            assert image.shape[:2] == self.truth.shape
            scale = self.rng.uniform(0.5, 3.0)
            shift = scale * self.rng.uniform(-0.5, 0.5) * self.truth.min()  # every value stays positive
            maps.append((scale * self.truth + shift).astype(np.float32))
        return maps


def plane_error(points: np.ndarray) -> float:
    """RMS distance of opencv-frame points from the test plane, relative to their extent."""
    return rms(points @ PLANE_NORMAL - PLANE_NORMAL @ PLANE_POINT) / np.ptp(points, axis=0).max()


def grey(value: int = 128) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), value, dtype=np.uint8)


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


# --- intrinsics --------------------------------------------------------------------------


def test_intrinsics_priority_focal_fov_exif_default():
    both = intrinsics_for(200, 100, fov=90, focal=1200, exif_focal_35mm=26)
    assert (both.fx, both.fy, both.source) == (1200, 1200, "--focal 1200")
    fov = intrinsics_for(200, 100, fov=90, exif_focal_35mm=26)
    assert fov.fx == pytest.approx(100.0) and fov.source == "--fov 90"
    exif = intrinsics_for(200, 100, exif_focal_35mm=26)
    assert exif.fx == pytest.approx(26 * math.hypot(200, 100) / math.hypot(36, 24))  # on the diagonal, as Depth Pro
    assert exif.source == "EXIF 26 mm (35 mm equiv., on the diagonal)" and exif.note is None
    default = intrinsics_for(200, 100)
    assert default.fx == pytest.approx(100 / math.tan(math.radians(30)))
    assert default.source == "default 60° horizontal FOV"
    for absurd in (0, 6000):
        ignored = intrinsics_for(200, 100, exif_focal_35mm=absurd)
        assert ignored.source.startswith("default") and f"EXIF focal length {absurd} mm" in ignored.note


def test_principal_point_is_the_pixel_centre_convention_unless_given():
    k = intrinsics_for(200, 100, fov=90)
    assert (k.cx, k.cy) == (99.5, 49.5)
    # The left edge of the image (u = -0.5) sees half the field of view.
    edge = unproject(np.ones((100, 200), np.float32), k)
    half_pixel = 0.5 / k.fx
    assert edge[0, 0, 0] - half_pixel == pytest.approx(-math.tan(math.radians(45)), rel=1e-6)
    assert intrinsics_for(200, 100, principal=(10, 20)).cx == 10


@pytest.mark.parametrize(
    "options",
    [
        {"fov": 0},
        {"fov": 180},
        {"fov": -10},
        {"fov": float("nan")},
        {"focal": 0},
        {"focal": -5},
        {"focal": float("inf")},
        {"principal": (float("nan"), 1.0)},
    ],
)
def test_invalid_intrinsics_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        intrinsics_for(200, 100, **options)


def test_exif_focal_35mm_round_trip(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.FocalLengthIn35mmFilm] = 26
    tagged = tmp_path / "tagged.jpg"
    Image.new("RGB", (16, 8)).save(tagged, exif=exif)
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (16, 8)).save(plain)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")

    assert exif_focal_35mm(tagged) == 26.0
    assert exif_focal_35mm(plain) is None
    assert exif_focal_35mm(junk) is None
    assert exif_focal_35mm(tmp_path / "missing.jpg") is None


# --- values to depth --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_near_far_sends_the_percentiles_to_near_and_far(kind):
    values = np.linspace(1.0, 2.0, 10001, dtype=np.float32).reshape(1, -1)  # p1 = 1.01, p99 = 1.99
    depth, description = to_metric_depth(values, kind=kind, near=2.0, far=50.0)
    assert depth.dtype == np.float32
    p1_depth, p99_depth = (2.0, 50.0) if kind == "depth" else (50.0, 2.0)
    assert depth[0, 100] == pytest.approx(p1_depth, rel=1e-5)
    assert depth[0, 9900] == pytest.approx(p99_depth, rel=1e-5)
    steps = np.diff(depth[0])
    assert np.all(steps > 0) if kind == "depth" else np.all(steps < 0)  # large disparity = near
    assert description == f"depth 2–50 from {kind} percentiles 1–99"


def test_depth_rule_is_affine_in_depth_for_depth_and_in_inverse_depth_for_disparity():
    values = np.array([[1.0, 1.5, 2.0]], np.float32)  # the 1st and 99th percentiles are ~1 and ~2
    depth, _ = to_metric_depth(values, kind="depth", near=2.0, far=4.0)
    assert depth[0, 1] == pytest.approx((depth[0, 0] + depth[0, 2]) / 2, rel=1e-6)
    depth, _ = to_metric_depth(values, kind="disparity", near=2.0, far=4.0)
    assert 1 / depth[0, 1] == pytest.approx((1 / depth[0, 0] + 1 / depth[0, 2]) / 2, rel=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_near_far_defaults_keep_a_ten_to_one_ratio(kind):
    values = np.linspace(1.0, 2.0, 10001, dtype=np.float32)
    assert to_metric_depth(values, kind=kind)[1].startswith("depth 1–10 ")
    assert to_metric_depth(values, kind=kind, near=3)[1].startswith("depth 3–30 ")
    assert to_metric_depth(values, kind=kind, far=40)[1].startswith("depth 4–40 ")


@pytest.mark.parametrize(
    "kind, expected, proportional",
    [
        ("depth", [[1.5, 3.0], [6.0, 12.0]], "predicted depth"),
        ("disparity", [[6.0, 3.0], [1.5, 0.75]], "1/disparity"),
    ],
)
def test_depth_at_is_a_single_scale_with_zero_shift(kind, expected, proportional):
    values = np.array([[0.5, 1.0], [2.0, 4.0]], np.float32)
    depth, description = to_metric_depth(values, kind=kind, depth_at=(1, 0, 3.0))
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    assert description == f"depth 3 at pixel (1, 0), depth ∝ {proportional} (shift assumed 0)"


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_values_give_nan_depth(kind):
    values = np.array([[1.0, 0.0, -1.0, np.nan, np.inf, 2.0]], np.float32)
    depth, _ = to_metric_depth(values, kind=kind, depth_at=(0, 0, 1.0))
    np.testing.assert_array_equal(np.isnan(depth), [[False, True, True, True, True, False]])
    depth, _ = to_metric_depth(values, kind=kind, near=1, far=2)
    assert np.isnan(depth[0, 1:5]).all() and np.isfinite(depth[0, [0, 5]]).all()


@pytest.mark.parametrize("kind, expected", [("depth", 2.0), ("disparity", 1.5)])
def test_constant_map_lands_between_near_and_far(kind, expected):
    """Halfway between near and far in depth for depth, in inverse depth for disparity."""
    values = np.full((4, 4), 0.3, np.float32)
    rule = DepthRule.fit(values, kind=kind, near=1.0, far=3.0)
    assert rule.scale == 0 and rule.description.endswith(f"(constant {kind})")
    np.testing.assert_allclose(rule.apply(values), expected, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "options",
    [
        {"near": 0},
        {"near": -1},
        {"near": 5, "far": 5},
        {"near": 5, "far": 2},
        {"far": float("inf")},
        {"near": 1, "depth_at": (0, 0, 1.0)},
        {"depth_at": (5, 0, 1.0)},
        {"depth_at": (0, -1, 1.0)},
        {"depth_at": (0, 0, 0.0)},
        {"depth_at": (1, 1, 1.0)},  # no valid value there
    ],
)
def test_invalid_depth_rules_are_usage_errors(kind, options):
    values = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
    with pytest.raises(UsageError):
        to_metric_depth(values, kind=kind, **options)


def test_the_kind_is_required_and_checked():
    values = np.ones((2, 2), np.float32)
    with pytest.raises(TypeError):
        to_metric_depth(values)  # no default kind
    with pytest.raises(ValueError, match="kind"):
        DepthRule.fit(values, kind="inverse")
    with pytest.raises(ValueError, match="kind"):
        build_point_cloud(grey(), np.ones((HEIGHT, WIDTH), np.float32), camera(), kind="metres")


# --- scenes with known geometry ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_plane_is_recovered_from_an_oracle_of_either_kind_with_near_far(kind):
    """The oracle's unknown affine is undone exactly by near/far at the true depths of its
    percentiles: in depth space for a depth network, in inverse depth for a disparity one."""
    true = plane_depth()
    oracle = OracleNetwork(true, kind, seed=3)
    near, far = true_near_far(true, kind)
    clouds = [
        build_point_cloud(
            grey(), values, camera(), kind=oracle.output_kind, near=near, far=far, normals=True,
            max_points=None, frame="opencv",
        )
        for values in oracle.predict_batch([grey(), grey()])  # two calls' worth: two affines
    ]
    for cloud in clouds:
        error = plane_error(cloud.points)
        print(f"plane RMS error / scene size ({kind} oracle, near/far): {error:.2e}")
        assert error <= 1e-4
        assert len(cloud.points) > 0.9 * WIDTH * HEIGHT
        assert angles_deg(cloud.normals, np.broadcast_to(PLANE_NORMAL, cloud.normals.shape)).max() < 0.05
        assert f"from {kind} percentiles" in cloud.description
    np.testing.assert_allclose(clouds[0].points, clouds[1].points, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_declaring_the_wrong_kind_bends_the_plane(kind):
    true = plane_depth()
    values = OracleNetwork(true, kind, seed=3).predict_batch([grey()])[0]
    wrong = OTHER_KIND[kind]
    cloud = build_point_cloud(
        grey(), values, camera(), kind=wrong, near=min(true_near_far(true, wrong)),
        far=max(true_near_far(true, wrong)), max_points=None, frame="opencv",
    )
    error = plane_error(cloud.points)
    print(f"plane RMS error / scene size ({kind} oracle declared {wrong}): {error:.2e}")
    assert error > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_plane_is_recovered_with_depth_at(kind):
    """A scale-only rule is exact for a map with no shift, whatever its scale."""
    true = plane_depth()
    x, y = 40, 100
    cloud = build_point_cloud(
        grey(),
        3.7 * exact(true, kind),
        camera(),
        kind=kind,
        depth_at=(x, y, float(true[y, x])),
        max_points=None,
        frame="opencv",
    )
    error = plane_error(cloud.points)
    print(f"plane RMS error / scene size ({kind}, depth_at): {error:.2e}")
    assert error <= 1e-4
    assert cloud.normals is None


def test_write_point_cloud_follows_the_declared_kind(tmp_path):
    true = plane_depth()
    for kind in KINDS:
        oracle = OracleNetwork(true, kind)
        near, far = true_near_far(true, kind)
        path = tmp_path / f"{kind}.ply"
        values = oracle.predict_batch([grey()])[0]
        camera, record = photo_record(None, values.shape, oracle.output_kind, CameraOptions(focal=FOCAL))
        note = write_cloud(path, grey(), values, oracle.output_kind, PointCloudOptions(focal=FOCAL, near=near, far=far),
                           camera, record, "opengl")
        assert f"from {kind} percentiles" in note and path.stat().st_size > 0


@pytest.mark.parametrize("kind", KINDS)
def test_sphere_is_recovered_with_outward_normals_facing_the_camera(kind):
    true = sphere_depth()
    values = exact(true, kind)  # where the rays miss: inf depth, 0 disparity (infinitely far)
    u = int(round(FOCAL * SPHERE_CENTRE[0] / SPHERE_CENTRE[2] + (WIDTH - 1) / 2))
    v = int(round(FOCAL * SPHERE_CENTRE[1] / SPHERE_CENTRE[2] + (HEIGHT - 1) / 2))
    cloud = build_point_cloud(
        grey(), values, camera(), kind=kind, depth_at=(u, v, float(true[v, u])), normals=True, max_points=None,
        frame="opencv",
    )
    offset = cloud.points - SPHERE_CENTRE
    error = rms(np.linalg.norm(offset, axis=1) - SPHERE_RADIUS) / (2 * SPHERE_RADIUS)
    print(f"sphere RMS error / scene size ({kind}): {error:.2e}")
    assert error <= 1e-4
    assert len(cloud.points) > 0.9 * np.isfinite(true).sum()

    normals = cloud.normals
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-5)
    assert (np.einsum("ij,ij->i", normals, offset) > 0).all()  # outward
    assert (np.einsum("ij,ij->i", normals, cloud.points) < 0).all()  # toward the camera
    error = angles_deg(normals, offset)
    assert np.median(error) < 0.2 and np.percentile(error, 95) < 5.0  # worst at the rim


def test_opengl_frame_flips_y_and_z():
    true = plane_depth()
    options = dict(kind="depth", depth_at=(80, 60, float(true[60, 80])), normals=True, max_points=None)
    cv = build_point_cloud(grey(), exact(true, "depth"), camera(), frame="opencv", **options)
    gl = build_point_cloud(grey(), exact(true, "depth"), camera(), **options)
    flip = np.array([1, -1, -1], np.float32)
    np.testing.assert_array_equal(gl.points, cv.points * flip)
    np.testing.assert_array_equal(gl.normals, cv.normals * flip)
    assert (gl.points[:, 2] < 0).all()


def test_unproject_is_the_pinhole_model():
    k = Intrinsics(fx=100.0, fy=80.0, cx=3.0, cy=2.0, source="test")
    depth = np.full((5, 7), 2.0, np.float32)
    depth[4, 6] = np.nan
    xyz = unproject(depth, k)
    assert xyz.shape == (5, 7, 3) and xyz.dtype == np.float32
    np.testing.assert_allclose(xyz[1, 5], [(5 - 3) * 2 / 100, (1 - 2) * 2 / 80, 2.0], rtol=1e-6)
    np.testing.assert_array_equal(xyz[2, 3], [0, 0, 2])
    assert np.isnan(xyz[4, 6]).all()


# --- flying pixels and sky ---------------------------------------------------------------


def test_edge_mask_is_relative_to_the_pixels_own_depth():
    depth = np.array([[1.0, 1.0, 2.0, np.nan, 2.0]], np.float32)
    np.testing.assert_array_equal(edge_mask(depth, 0.5), [[False, True, False, False, False]])
    np.testing.assert_array_equal(edge_mask(depth, 0.4), [[False, True, True, False, False]])


def step_scene() -> tuple[np.ndarray, np.ndarray]:
    """Depth of a box at depth 2 before a wall at depth 8, the boundary blurred in disparity."""
    depth = np.full((HEIGHT, WIDTH), 8.0)
    box = np.zeros((HEIGHT, WIDTH), bool)
    box[30:90, 50:110] = True
    depth[box] = 2.0
    return 1 / cv2.GaussianBlur(1 / depth, (0, 0), sigmaX=1.5), box


@pytest.mark.parametrize("kind", KINDS)
def test_flying_pixels_between_box_and_wall_are_dropped(kind):
    depth, box = step_scene()
    values = exact(depth, kind)
    options = dict(kind=kind, depth_at=(80, 60, 2.0), max_points=None, frame="opencv")
    unfiltered = build_point_cloud(grey(), values, camera(), edge_threshold=None, **options)
    z = unfiltered.points[:, 2]
    assert ((z > 2.5) & (z < 7.5)).sum() > 100  # the scene does have flying pixels

    z = build_point_cloud(grey(), values, camera(), **options).points[:, 2]
    assert not ((z > 2.5) & (z < 7.5)).any()
    near_box, near_wall = np.abs(z - 2) < 0.05, np.abs(z - 8) < 0.2
    # Only the blurred rim (3 pixels deep here) goes: most of the box and the wall remain.
    assert near_box.sum() >= cv2.erode(box.astype(np.uint8), np.ones((7, 7), np.uint8)).sum()
    assert near_box.sum() > 0.75 * box.sum()
    assert near_wall.sum() > 0.9 * (~box).sum()


@pytest.mark.parametrize("kind", KINDS)
def test_sky_is_dropped_unless_switched_off(kind):
    depth = np.full((HEIGHT, WIDTH), 2.0)
    depth[:40] = 250.0  # sky: beyond 50 times the scene's depth (disparity below 2 %)
    depth[40:45] = 50.0  # far, but not sky
    values = exact(depth, kind)
    options = dict(kind=kind, depth_at=(80, 100, 2.0), max_points=None, edge_threshold=None)
    cloud = build_point_cloud(grey(), values, camera(), **options)
    assert len(cloud.points) == (HEIGHT - 40) * WIDTH
    assert "sky 33.3%" in cloud.description
    everything = build_point_cloud(grey(), values, camera(), sky_fraction=None, **options)
    assert len(everything.points) == values.size


# --- downsampling ------------------------------------------------------------------------


@pytest.mark.parametrize("max_points", [1, 500, 5000])
def test_voxel_downsampling_meets_the_count_and_stays_on_the_surface(max_points):
    true = plane_depth()
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 200, np.arange(WIDTH, dtype=np.uint8)
    cloud = build_point_cloud(
        rgb, exact(true, "disparity"), camera(), kind="disparity", depth_at=(80, 60, float(true[60, 80])),
        max_points=max_points, normals=True, frame="opencv",
    )
    assert 0.95 * max_points <= len(cloud.points) <= max_points
    assert len(cloud.colors) == len(cloud.normals) == len(cloud.points)
    assert "voxel" in cloud.description
    size = np.ptp(plane_depth())
    assert rms(cloud.points @ PLANE_NORMAL - PLANE_NORMAL @ PLANE_POINT) / size <= 1e-4
    assert (cloud.colors[:, 0] == 200).all() and (cloud.colors[:, 2] == 0).all()
    assert angles_deg(cloud.normals, np.broadcast_to(PLANE_NORMAL, cloud.normals.shape)).max() < 0.05


def test_random_downsampling_is_seeded():
    true = plane_depth()
    rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    values = exact(true, "disparity")
    options = dict(kind="disparity", depth_at=(80, 60, float(true[60, 80])), max_points=1000, downsample="random")
    first = build_point_cloud(rgb, values, camera(), seed=1, **options)
    again = build_point_cloud(rgb, values, camera(), seed=1, **options)
    other = build_point_cloud(rgb, values, camera(), seed=2, **options)
    assert len(first.points) == 1000
    np.testing.assert_array_equal(first.points, again.points)
    np.testing.assert_array_equal(first.colors, again.colors)
    assert not np.array_equal(first.points, other.points)
    # Each kept point still carries its own pixel's colour.
    cv = build_point_cloud(rgb, values, camera(), seed=1, frame="opencv", **options)
    k = camera()
    cols = np.rint(cv.points[:, 0] / cv.points[:, 2] * k.fx + k.cx).astype(int)
    rows = np.rint(cv.points[:, 1] / cv.points[:, 2] * k.fy + k.cy).astype(int)
    np.testing.assert_array_equal(cv.colors, rgb[rows, cols])


@pytest.mark.parametrize(
    "options",
    [
        {"max_points": 0},
        {"downsample": "grid"},
        {"frame": "blender"},
        {"edge_threshold": 0},
        {"sky_fraction": 1.5},
    ],
)
def test_invalid_point_cloud_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        build_point_cloud(grey(), np.ones((HEIGHT, WIDTH), np.float32), camera(), kind="disparity", **options)
