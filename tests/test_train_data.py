"""The paper's training data: the five sets' ground truth as their publishers define it, their folder layouts,
the published list files (re-rooted), the --mix, --keep within each source, and a run over all five at once."""

from __future__ import annotations

import io
import math
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth_cli.datasets import blendedmvs, hypersim, irs, tartanair, vkitti
from anydepth_cli.datasets import generic
from anydepth_cli.datasets.archive import FolderFiles, Sample
from anydepth_cli.datasets.family import Reader, SampleSet
from anydepth_cli.datasets.lists import read_list
from anydepth_cli.datasets.registry import parse_source
from anydepth_cli.errors import UsageError
from anydepth_cli.training.data import Mix, epoch_batches
from anydepth_cli.training.distributed import World
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.evaluation.folder_run import run_eval
from anydepth_cli.training.sources import open_sources, scan, validation_sources, weigh, write_data_lists
from fixtures_dir import fixtures_dir
from test_train import ARCH, run_train
from make_toy_dataset import save_fixture_encoder  # noqa: E402  (test_train puts tools/ on the path)

H, W = 24, 32
FOREIGN = "/root/autodl-tmp/datasets"
"""Where the published lists' paths start (the authors' machine)."""


def photo(seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((W, H), Image.BILINEAR))


def scene_depth(seed: int) -> np.ndarray:
    """Planar depth in metres, 1–9 m, smooth."""
    rgb = photo(seed + 1000).astype(np.float64) / 255
    return 1.0 + 8.0 * rgb[..., 0] * (0.5 + 0.5 * rgb[..., 1])


def save_photo(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(seed)).save(path)


def png16(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def npy(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def pfm(values: np.ndarray) -> bytes:
    """A grey PFM as MVSNet writes it: little-endian (negative scale), rows from the bottom up."""
    height, width = values.shape
    return f"Pf\n{width} {height}\n-1\n".encode() + np.flipud(values).astype("<f4").tobytes()


def exr(values: np.ndarray, path) -> None:
    import OpenEXR

    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                 {"G": values.astype(np.float32)}).write(str(path))


def hdf5(values: np.ndarray) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        file.create_dataset("dataset", data=values.astype(np.float16))
    return buffer.getvalue()


def hypersim_distance(depth: np.ndarray) -> np.ndarray:
    """Distances to the camera centre of the points at planar `depth`, for Hypersim's 60° camera."""
    height, width = depth.shape
    focal = 0.5 * width / math.tan(math.radians(30))
    x = np.arange(width) - (width - 1) / 2
    y = np.arange(height)[:, None] - (height - 1) / 2
    return depth * np.sqrt(x**2 + y**2 + focal**2) / focal


# ------------------------------------------------------------------------------ each set's ground truth


def test_vkitti_depth_is_centimetres_with_the_sky_invalid_and_capped_at_80_m():
    raw = np.array([[0, 1, 150, 8000], [8001, 30000, 65534, 65535]])
    depth, valid = vkitti.decode(png16(raw), "depth_00000.png")
    assert valid.tolist() == [[False, True, True, True], [True, True, True, False]]
    np.testing.assert_allclose(depth[valid], raw[valid] / 100, rtol=1e-6)
    assert depth.dtype == np.float32 and not depth[~valid].any()
    assert vkitti.FAMILY.max_depth == 80.0


def test_the_cap_and_the_mask_apply_on_top_of_the_decoder(tmp_path):
    (tmp_path / "depth_00000.png").write_bytes(png16(np.array([[150, 8000, 8001, 65535]])))
    Image.fromarray(np.array([[0, 255, 255, 255]], np.uint8)).save(tmp_path / "mask.png")
    sample = Sample("rgb.jpg", "depth_00000.png", "mask.png")
    depth, valid = Reader(vkitti.FAMILY, FolderFiles(tmp_path), cap=80.0).truth(sample, (1, 4))
    assert valid.tolist() == [[False, True, False, False]] and depth[0, 1] == pytest.approx(80.0)
    assert Reader(vkitti.FAMILY, FolderFiles(tmp_path)).truth(sample, (1, 4))[1].tolist() == [[False, True, True, False]]


def test_tartanair_depth_is_metres_with_the_sky_invalid():
    values = np.array([[0.5, 12.25, 9999.0], [10000.0, 31000.0, 0.0], [np.nan, -1.0, np.inf]], np.float32)
    depth, valid = tartanair.decode(npy(values), "000000_left_depth.npy")
    assert valid.tolist() == [[True, True, True], [False, False, False], [False, False, False]]
    np.testing.assert_array_equal(depth[valid], values[valid])


def test_blendedmvs_pfm_rows_run_bottom_up_and_zero_is_invalid():
    values = np.arange(12, dtype=np.float32).reshape(3, 4) * 0.5  # the top-left pixel is 0: no surface
    depth, valid = blendedmvs.decode(pfm(values), "00000000.pfm")
    np.testing.assert_array_equal(depth, values)
    assert valid.sum() == 11 and not valid[0, 0]


def test_irs_disparity_becomes_depth_by_focal_length_times_baseline(tmp_path):
    disparity = np.array([[48.0, 4.8, 0.0], [-2.0, np.inf, 96.0]], np.float32)
    exr(disparity, tmp_path / "d_1.exr")
    depth, valid = irs.decode((tmp_path / "d_1.exr").read_bytes(), "d_1.exr")
    assert valid.tolist() == [[True, True, False], [False, False, True]]
    np.testing.assert_allclose(depth[valid], [1.0, 10.0, 0.5], rtol=1e-6)  # 480 px × 0.1 m / disparity


def test_hypersim_distances_become_planar_depth_and_millimetre_pngs_read_as_metres():
    plane = np.full((H, W), 2.0)  # a wall facing the camera: every distance differs, the planar depth does not
    distance = hypersim_distance(plane)
    distance[0, :3] = np.nan  # no geometry
    depth, valid = hypersim.decode(hdf5(distance), "frame.0000.depth_meters.hdf5")
    assert valid.sum() == H * W - 3 and not valid[0, :3].any()
    assert distance[valid].max() > 2.3  # the corners are far from the centre of the image...
    np.testing.assert_allclose(depth[valid], 2.0, rtol=2e-3)  # ...and at the same planar depth (float16 storage)
    depth, valid = hypersim.decode(png16(np.array([[0, 1500, 65535]])), "depth_plane_cam_00_fr0000.png")
    assert valid.tolist() == [[False, True, True]] and depth[0, 1:].tolist() == pytest.approx([1.5, 65.535])


def test_without_the_datasets_extra_hdf5_is_one_usage_error_naming_it(monkeypatch):
    from anydepth_cli.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "h5py", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r'h5py .*anydepth-cli\[datasets\]'):
        hypersim.decode(b"", "frame.0000.depth_meters.hdf5")


# ------------------------------------------------------------------------- the sets in their layouts


def make_vkitti(root, count: int) -> list:
    for i in range(count):
        frames = root / "Scene01" / "clone" / "frames"
        save_photo(frames / "rgb" / "Camera_0" / f"rgb_{i:05d}.jpg", i)
        raw = np.round(scene_depth(i) * 100)
        raw[:3] = 65535  # sky
        (frames / "depth" / "Camera_0").mkdir(parents=True, exist_ok=True)
        (frames / "depth" / "Camera_0" / f"depth_{i:05d}.png").write_bytes(png16(raw))
    return sorted(root.rglob("rgb_*.jpg"))


def make_hypersim(root, count: int) -> list:
    images = root / "ai_001_001" / "images"
    for i in range(count):
        save_photo(images / "scene_cam_00_final_preview" / f"frame.{i:04d}.tonemap.jpg", 10 + i)
        (images / "scene_cam_00_geometry_hdf5").mkdir(parents=True, exist_ok=True)
        distance = hypersim_distance(scene_depth(10 + i))
        distance[-3:, :5] = np.nan  # no geometry (a window)
        (images / "scene_cam_00_geometry_hdf5" / f"frame.{i:04d}.depth_meters.hdf5").write_bytes(hdf5(distance))
    return sorted(root.rglob("*.tonemap.jpg"))


def make_irs(root, count: int) -> list:
    scene = root / "Home" / "ArchVizInterior03Data"
    for i in range(count):
        save_photo(scene / f"l_{i + 1}.png", 20 + i)
        save_photo(scene / f"r_{i + 1}.png", 40 + i)
        disparity = 48.0 / scene_depth(20 + i)
        disparity[:2, -6:] = 0.0  # no depth
        exr(disparity, scene / f"d_{i + 1}.exr")
    return sorted(scene.glob("l_*.png"))


def make_blendedmvs(root, count: int) -> list:
    scene = root / "5bfe5ae0fe0ea555e6a969ca"
    for i in range(count):
        save_photo(scene / "blended_images" / f"{i:08d}.jpg", 30 + i)
        save_photo(scene / "blended_images" / f"{i:08d}_masked.jpg", 30 + i)
        depth = scene_depth(30 + i) * 40  # scene units
        depth[:4, :4] = 0
        (scene / "rendered_depth_maps").mkdir(exist_ok=True)
        (scene / "rendered_depth_maps" / f"{i:08d}.pfm").write_bytes(pfm(depth))
    return sorted((scene / "blended_images").glob("????????.jpg"))


def make_tartanair(root, count: int) -> list:
    trajectory = root / "abandonedfactory" / "Easy" / "P000"
    for i in range(count):
        save_photo(trajectory / "image_left" / f"{i:06d}_left.png", 50 + i)
        depth = scene_depth(50 + i).astype(np.float32)
        depth[:2] = 13000.0  # sky
        (trajectory / "depth_left").mkdir(parents=True, exist_ok=True)
        np.save(trajectory / "depth_left" / f"{i:06d}_left_depth.npy", depth)
    return sorted(trajectory.rglob("*_left.png"))


def depth_of(module, root: Path, image: Path) -> Path:
    """The depth file the family pairs with `image` under `root`."""
    [depth] = [root / s.depth for s in module.FAMILY.find(FolderFiles(root)) if root / s.rgb == image]
    return depth


MAKERS = {"vkitti": (make_vkitti, vkitti), "hypersim": (make_hypersim, hypersim), "irs": (make_irs, irs),
          "blendedmvs": (make_blendedmvs, blendedmvs), "tartanair": (make_tartanair, tartanair)}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_each_set_is_found_in_its_own_layout_and_reads_as_the_scene(name, tmp_path):
    make, module = MAKERS[name]
    images = make(tmp_path, 3)
    files = FolderFiles(tmp_path)
    samples = module.FAMILY.find(files)
    assert [files.root / sample.rgb for sample in samples] == images
    depth, valid = Reader(module.FAMILY, files).truth(samples[1], (H, W))
    seed = {"vkitti": 1, "hypersim": 11, "irs": 21, "blendedmvs": 31, "tartanair": 51}[name]
    expected = scene_depth(seed) * (40 if name == "blendedmvs" else 1)
    assert depth.shape == (H, W) and 0.75 * H * W < valid.sum() < H * W  # the sky or the holes are out
    np.testing.assert_allclose(depth[valid], expected[valid], rtol=2e-3, atol=0.005)  # cm (vkitti), float16 (hypersim)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_training_set_reads_the_same_from_its_tar(name, tmp_path):
    make, module = MAKERS[name]
    make(tmp_path / "set", 3)
    with tarfile.open(tmp_path / "set.tar", "w") as archive:
        archive.add(tmp_path / "set", arcname=".")
    [folder] = scan(open_sources([f"{name}:{tmp_path / 'set'}"], print))
    [packed] = scan(open_sources([f"{name}:{tmp_path / 'set.tar'}"], print))
    assert packed.samples == folder.samples and len(packed.samples) == 3 and not packed.unreadable
    assert packed.reader.where(packed.samples[0].rgb).startswith(f"{tmp_path / 'set.tar'}:")
    for sample in packed.samples:
        rgb = packed.reader.rgb(sample)
        assert np.array_equal(rgb, folder.reader.rgb(sample))
        for a, b in zip(packed.reader.truth(sample, rgb.shape[:2]), folder.reader.truth(sample, rgb.shape[:2])):
            assert np.array_equal(a, b)
        assert packed.reader.truth(sample)[1].any(), "a sample with ground truth"


# ------------------------------------------------------------------------------- list files, re-rooted


def write_list(path, rows: list[tuple[str, ...]], separator: str = " ") -> None:
    path.write_text("# a published split\n\n" + "".join(separator.join(row) + "\n" for row in rows))


def test_published_lists_are_re_rooted_whatever_folder_the_root_names(tmp_path):
    data = tmp_path / "data"
    images = make_vkitti(data / "vkitti2", 2)
    relative = [image.relative_to(data) for image in images]
    rows = [(f"{FOREIGN}/{r}", f"{FOREIGN}/{str(r).replace('rgb', 'depth').replace('.jpg', '.png')}") for r in relative]
    write_list(tmp_path / "train.txt", rows)
    for root in (data, data / "vkitti2"):  # the folder holding the authors' dataset folders, or the dataset's own
        listed = read_list(tmp_path / "train.txt", vkitti.FAMILY, root)
        files = FolderFiles(listed.base)
        assert [Path(files.where(s.rgb)) for s in listed.samples] == images and all(files.has(s.depth) for s in listed.samples)
        replaced = FOREIGN if root == data else f"{FOREIGN}/vkitti2"
        assert listed.note == f"{tmp_path / 'train.txt'}: replaced the prefix {replaced} of its paths with {root}"
    unrooted = read_list(tmp_path / "train.txt", vkitti.FAMILY)
    assert "--data-root" in unrooted.note and unrooted.samples[0].rgb.startswith(FOREIGN)


def test_relative_lists_resolve_against_the_root_else_their_folder_comma_or_whitespace(tmp_path):
    write_list(tmp_path / "a.txt", [("x/1.png", "y/1.npy", "z/1.png"), ("x/2.png", "y/2.npy")], separator=",")
    write_list(tmp_path / "b.txt", [("x/1.png", "y/1.npy")], separator="\t ")
    a = read_list(tmp_path / "a.txt", generic.family())
    assert FolderFiles(a.base).where(a.samples[0].mask) == str(tmp_path / "z" / "1.png")
    b = read_list(tmp_path / "b.txt", generic.family(), tmp_path / "root")
    assert FolderFiles(b.base).where(b.samples[0].depth) == str(tmp_path / "root" / "y" / "1.npy")
    (tmp_path / "bad.txt").write_text("only_one_field.png\n")
    with pytest.raises(UsageError, match="bad.txt:1: expected 'RGB DEPTH"):
        read_list(tmp_path / "bad.txt", generic.family())


def test_missing_files_of_a_list_are_counted_and_named_not_fatal(tmp_path):
    images = make_tartanair(tmp_path / "tartanair", 3)
    rows = [(str(image), str(depth_of(tartanair, tmp_path / "tartanair", image))) for image in images]
    rows.append((str(images[0]).replace("000000", "000099"), "nowhere_depth.npy"))
    write_list(tmp_path / "train.txt", rows)
    [source] = scan(open_sources([f"tartanair:{tmp_path / 'train.txt'}"], print))
    assert (source.found, len(source.samples)) == (4, 3)
    [(image, reason)] = source.unreadable
    assert image.endswith("000099_left.png") and "nowhere_depth.npy" in reason


def test_the_mix_weighs_the_datasets_given_and_bad_arguments_are_usage_errors(tmp_path):
    make_vkitti(tmp_path / "vkitti", 2)
    make_irs(tmp_path / "irs", 3)
    with pytest.raises(UsageError, match="unknown dataset 'nyu'"):
        parse_source("nyu:/data/nyu")
    sources = scan(open_sources([f"vkitti:{tmp_path / 'vkitti'}", f"irs:{tmp_path / 'irs'}"], print))
    assert Mix.of(weigh(sources, "irs=3,vkitti=1")) == Mix((2, 3), (0.25, 0.75))
    assert Mix.of(weigh(sources, None)) == Mix((2, 3))
    with pytest.raises(UsageError, match="--mix gives no weight to vkitti"):
        weigh(sources, "irs=1")
    with pytest.raises(UsageError, match="--mix names hypersim, which no data argument is"):
        weigh(sources, "irs=1,vkitti=1,hypersim=2")
    with pytest.raises(UsageError, match="--max-depth takes NAME=NUMBER"):
        open_sources([f"vkitti:{tmp_path / 'vkitti'}"], print, max_depth="vkitti=-3")


# ---------------------------------------------------------------------------- the mix and --keep


def test_a_mix_draws_its_datasets_at_the_asked_rates_whatever_the_process_count():
    mix = Mix((30, 90), (0.8, 0.2))  # the small set drawn 4 times as often as the large one
    draws = [index for epoch in range(40) for batch in epoch_batches(mix, 8, World(), epoch, seed=3)
             for _, _, index in batch]
    share = np.mean(np.asarray(draws) < 30)
    assert len(draws) == 40 * 120 and abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / len(draws))
    first_epoch = draws[:120]
    assert len(set(i for i in first_epoch if i < 30)) == 30  # the small set cycles through all its samples
    single = epoch_batches(mix, 4, World(), epoch=2, seed=3)
    split = [epoch_batches(mix, 2, World(rank, 2), epoch=2, seed=3) for rank in range(2)]
    assert len(single) == len(split[0]) == 30
    for k, batch in enumerate(single):
        assert sorted(batch) == sorted(split[0][k] + split[1][k])


def test_keep_filters_within_each_source_and_lists_the_dropped_per_source(tmp_path):
    make_tartanair(tmp_path / "big", 20)
    make_blendedmvs(tmp_path / "small", 5)
    sources = scan(open_sources([f"tartanair:{tmp_path / 'big'}", f"blendedmvs:{tmp_path / 'small'}"], print), keep=0.8)
    big, small = sources
    assert 12 <= len(big.samples) <= 16 and 3 <= len(small.samples) <= 4  # 20 % of each, on each score
    write_data_lists(tmp_path, weigh(sources, None))
    lines = (tmp_path / "dropped.txt").read_text().splitlines()
    assert lines[0] == f"# tartanair:{tmp_path / 'big'}: {len(big.dropped)} of 20"
    assert f"# blendedmvs:{tmp_path / 'small'}: {len(small.dropped)} of 5" in lines
    assert len(lines) == 2 + 25 - len(big.samples) - len(small.samples)


# ------------------------------------------------------------------------------------- validation


class Oracle:
    """Predicts the decoded ground truth of each photo it is shown (sky and holes at 0), in depth."""

    output_kind = "depth"

    def __init__(self, data: SampleSet) -> None:
        self.maps = {}
        for sample in data.samples:
            rgb = data.reader.rgb(sample)
            self.maps[rgb.tobytes()] = data.reader.truth(sample, rgb.shape[:2])[0]

    def predict_batch(self, images, sizes) -> list[np.ndarray]:
        return [self.maps[image.tobytes()] for image in images]


def test_validation_reads_named_sources_as_training_does_and_skips_what_it_cannot_read(tmp_path):
    data = tmp_path / "data"
    images = make_vkitti(data, 3)
    rows = [(f"{FOREIGN}/vkitti2/{image.relative_to(data)}", f"{FOREIGN}/vkitti2/{depth_of(vkitti, data, image).relative_to(data)}")
            for image in images]
    write_list(tmp_path / "val.txt", rows + [(f"{FOREIGN}/vkitti2/gone.jpg", f"{FOREIGN}/vkitti2/gone.png")])
    notes: list[str] = []
    [source] = validation_sources([f"vkitti:{tmp_path / 'val.txt'}"], notes.append, roots=[data])
    assert notes == [f"{tmp_path / 'val.txt'}: replaced the prefix {FOREIGN}/vkitti2 of its paths with {data}"]
    readable = SampleSet(source.reader, source.samples[:3])
    oracle = Oracle(readable)
    named = run_eval(source.data, {"m": oracle}, get_preset("default"))
    assert named.aggregates["m"]["n_images"] == 3 and named.aggregates["m"]["abs_rel"] < 1e-5
    [(image, reason)] = named.failures
    assert image.endswith("gone.jpg") and "gone" in reason
    as_generic = SampleSet(Reader(generic.family(), source.reader.files), readable.samples)
    plain = run_eval(as_generic, {"m": oracle}, get_preset("default"))  # PNG / 1000 with the sky's 65535 as depth
    assert plain.aggregates["m"]["abs_rel"] > 0.1


# ------------------------------------------------------------------------------ all five, end to end


@pytest.mark.slow
def test_a_run_over_all_five_sets_trains_without_an_unreadable_sample(tmp_path):
    encoder = save_fixture_encoder(tmp_path / "encoder.pth", fixtures_dir())
    data = tmp_path / "data"
    args = []
    for name, (make, _) in MAKERS.items():
        make(data / name, 4)
        args.append(f"{name}:{data / name}")
    vkitti_images = sorted((data / "vkitti").rglob("rgb_*.jpg"))
    rows = [(f"{FOREIGN}/vkitti2/{image.relative_to(data / 'vkitti')}",
             f"{FOREIGN}/vkitti2/{depth_of(vkitti, data / 'vkitti', image).relative_to(data / 'vkitti')}") for image in vkitti_images]
    write_list(tmp_path / "vkitti_train.txt", rows)
    args[0] = f"vkitti:{tmp_path / 'vkitti_train.txt'}"  # the published list, re-rooted
    done = run_train(*args, "--data-root", f"vkitti={data / 'vkitti'}", "--mix",
                     "hypersim=0.5,vkitti=0.1,irs=0.1,blendedmvs=0.1,tartanair=0.2", "--arch", ARCH,
                     "--encoder-weights", encoder, "--input-size", 28, "--steps", 3, "--batch-size", 4, "--workers", 0,
                     "--val", f"tartanair:{data / 'tartanair'}", "--val", args[0], "-o", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert f"replaced the prefix {FOREIGN}/vkitti2 of its paths with {data / 'vkitti'}" in said
    assert "20 of 20 sample(s) to train on" in said and "unreadable" not in said
    assert "datasets drawn --mix: vkitti 10.0%, hypersim 50.0%, irs 10.0%" in said, done.stderr
    assert re.search(r"\bskipped 0\b", said), done.stderr
    last = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[-1].split(",")
    assert 0 < float(last[3]) < 1 and 0 <= float(last[4]) <= 1  # validated on TartanAir's and the listed vKITTI samples
