"""The five zero-shot benchmarks: readers on fake sets in their real layouts (tar and extracted), each set's
protocol against the reference protocol written out independently (tests/benchmark_sets.py), the bounded
pipeline, and `anydepth eval --benchmark` end to end with a real tiny network."""

from __future__ import annotations

import csv
import math
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark_sets import ETH3D_SIZE, LOCATIONS, MAKERS, make_root, reference_ground_truth, reference_scores
from conftest import run_cli, tiny_model_args

from anydepth_cli.datasets.archive import Sample, TarFiles, locate
from anydepth_cli.datasets.family import Reader
from anydepth_cli.datasets.lists import read_list
from anydepth_cli.datasets.registry import BENCHMARKS, choose_benchmarks
from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.evaluation import benchmark_run
from anydepth_cli.evaluation.benchmark_run import Loaded, RunOptions, SetRun, load_sample
from anydepth_cli.evaluation.protocols import PROTOCOLS, nearest_columns

NAMES = tuple(BENCHMARKS)
TINY = "tiny_dinov3_sdt"  # its outputs vary over a photo, so the fits and scores are not degenerate


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sets")
    return {"tar": make_root(base / "tar", as_tar=True), "folder": make_root(base / "folder", as_tar=False)}


# ------------------------------------------------------------------------------------------------- readers


@pytest.mark.parametrize("name", NAMES)
def test_a_set_reads_the_same_from_its_tar_and_extracted(roots, name):
    module = BENCHMARKS[name]
    tar, folder = (locate(roots[kind], module.location) for kind in ("tar", "folder"))
    assert isinstance(tar, TarFiles) and not isinstance(folder, TarFiles)
    samples = module.find(tar)
    assert samples == module.find(folder) and len(samples) == 2
    for sample in samples:
        a, b = load_sample(Reader(module, tar), sample), load_sample(Reader(module, folder), sample)
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth) and np.array_equal(a.valid, b.valid)
        gt, valid = reference_ground_truth(name, MAKERS[name](), sample.rgb, sample.depth, sample.mask)
        assert np.array_equal(a.valid, valid), "valid pixels as the reference protocol defines them"
        assert np.allclose(a.depth[valid], gt[valid], rtol=1e-6, atol=0)
        assert a.rgb.shape[:2] == a.depth.shape


def test_naming_rules_keep_to_the_benchmark_split():
    nyu = BENCHMARKS["nyu"].find(_Names(MAKERS["nyu"]()))
    assert all(s.rgb.startswith("test/") for s in nyu), "NYU's train/ split is not scored"
    kitti = BENCHMARKS["kitti"].find(_Names(MAKERS["kitti"]()))
    assert [s.rgb.split("/")[-1] for s in kitti] == ["0000000069.png", "0000000448.png"], "no frame without ground truth"
    diode = BENCHMARKS["diode"].find(_Names(MAKERS["diode"]()))
    assert all(s.mask == s.depth.replace("_depth.npy", "_depth_mask.npy") for s in diode)


class _Names:
    root = Path("fake")

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def names(self) -> list[str]:
        return sorted(self.files)


def test_filename_lists_as_distributed(tmp_path):
    kitti = tmp_path / "kitti.txt"
    kitti.write_text("2011_09_26/d/image_02/data/1.png d/proj_depth/groundtruth/image_02/1.png 721.5377\n"
                     "2011_09_26/d/image_02/data/2.png None 721.5377\n", encoding="utf-8")
    assert read_list(kitti, BENCHMARKS["kitti"]).samples == [
        Sample("2011_09_26/d/image_02/data/1.png", "d/proj_depth/groundtruth/image_02/1.png")]
    nyu = tmp_path / "nyu.txt"
    nyu.write_text("test/a/rgb_0001.png test/a/depth_0001.png test/a/filled_0001.png", encoding="utf-8")
    assert read_list(nyu, BENCHMARKS["nyu"]).samples == [Sample("test/a/rgb_0001.png", "test/a/depth_0001.png")]
    diode = tmp_path / "diode.txt"
    diode.write_text("a.png a_depth.npy a_depth_mask.npy\n", encoding="utf-8")
    assert read_list(diode, BENCHMARKS["diode"]).samples == [Sample("a.png", "a_depth.npy", "a_depth_mask.npy")]
    diode.write_text("a.png a_depth.npy a_depth_mask.npy\nb.png b_depth.npy\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"diode.txt:2: .*RGB DEPTH MASK"):
        read_list(diode, BENCHMARKS["diode"]).samples
    nyu.write_text("test/a/rgb_0001.png\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"nyu.txt:1"):
        read_list(nyu, BENCHMARKS["nyu"]).samples


def test_a_listed_file_missing_from_the_set_fails_that_sample_alone(roots):
    module = BENCHMARKS["scannet"]
    files = locate(roots["tar"], module.location)
    with pytest.raises(InputError, match="not in"):
        load_sample(Reader(module, files), Sample("scene0406_02/color/999999.jpg", "scene0406_02/depth/999999.png"))


def test_choosing_and_locating_sets(tmp_path, roots):
    assert [m.name for m in choose_benchmarks("all")] == ["nyu", "kitti", "eth3d", "scannet", "diode"]
    assert [m.name for m in choose_benchmarks("DIODE, nyu")] == ["diode", "nyu"]
    for bad in ("nyu,foo", "nyu,nyu", ","):
        with pytest.raises(UsageError):
            choose_benchmarks(bad)
    with pytest.raises(UsageError, match="has no nyuv2/nyu_labeled_extracted.tar"):
        locate(tmp_path, LOCATIONS["nyu"])
    (tmp_path / LOCATIONS["nyu"] / "test").mkdir(parents=True)  # extracted into a folder named like the tar
    assert locate(tmp_path, LOCATIONS["nyu"]).root == tmp_path / LOCATIONS["nyu"]
    packed = tmp_path / "eth3d" / "eth3d.tar"
    packed.parent.mkdir()
    with tarfile.open(packed, "w:gz") as gz:
        gz.add(roots["tar"] / LOCATIONS["nyu"], arcname="x")
    with pytest.raises(UsageError, match="plain"):
        locate(tmp_path, LOCATIONS["eth3d"])


def test_an_eth3d_depth_file_of_the_wrong_size_is_named(roots):
    module = BENCHMARKS["eth3d"]
    files = locate(roots["tar"], module.location)
    depth = files.read(module.find(files)[0].depth)
    with pytest.raises(InputError, match="not the 40x1101 float32 depth"):
        module.decode(depth, "d.JPG", (ETH3D_SIZE[0], ETH3D_SIZE[1] + 1))


# ----------------------------------------------------------------------------------------------- protocols


def _prediction(loaded: Loaded, kind: str, seed: int) -> np.ndarray:
    """A plausible raw prediction: the ground truth's structure (filled where unmeasured) in the model's space, an
    unknown scale and shift, and noise; the disparity one dips below zero in places."""
    rng = np.random.default_rng(seed)
    height, width = loaded.depth.shape
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    typical = float(np.median(loaded.depth[loaded.valid]))
    depth = np.where(loaded.valid, loaded.depth, typical) * (1 + 0.2 * np.sin(9 * x + 5 * y))
    if kind == "depth":
        values = 0.3 * depth + 2.0
    else:
        inverse = 4.0 / np.maximum(depth, 1e-3)
        values = inverse - np.percentile(inverse[loaded.valid], 10)  # the farthest tenth below zero
    return (values * (1 + 0.1 * rng.standard_normal((height, width)))).astype(np.float32)


@pytest.mark.parametrize("kind", ["depth", "disparity"])
@pytest.mark.parametrize("name", NAMES)
def test_each_protocol_equals_the_reference(roots, name, kind):
    module, protocol = BENCHMARKS[name], PROTOCOLS[name]
    files = locate(roots["tar"], module.location)
    for seed, sample in enumerate(module.find(files)):
        loaded = load_sample(Reader(module, files), sample)
        pred = _prediction(loaded, kind, seed)
        ours = protocol.score(pred, loaded.depth, loaded.valid, kind)
        gt, valid = reference_ground_truth(name, MAKERS[name](), sample.rgb, sample.depth, sample.mask)
        reference = reference_scores(pred, gt, valid, kind, name)
        assert 0.01 < reference["abs_rel"] < 5 and 0.05 < reference["delta1"] < 0.999, "a fit worth checking"
        if kind == "disparity":
            assert (pred[valid] <= 0).any(), "non-positive predictions are left out of the disparity fit"
        for key in ("abs_rel", "delta1", "scale", "shift"):
            assert ours[key] == pytest.approx(reference[key], rel=1e-5), key
        assert ours["n_valid"] == int(valid.sum())


def test_eth3d_fits_on_the_columns_torch_keeps(roots):
    for height, width in ((4032, 6048), ETH3D_SIZE, (2000, 1500), (333, 4097)):
        factor = float(np.min(1024 / np.array((height, width))))
        kept = F.interpolate(torch.arange(width, dtype=torch.float64)[None, None], scale_factor=factor, mode="nearest")
        assert np.array_equal(nearest_columns(height, width, 1024), kept[0, 0].numpy().astype(np.int64))
    assert nearest_columns(480, 640, 1024) is None
    module, protocol = BENCHMARKS["eth3d"], PROTOCOLS["eth3d"]
    files = locate(roots["tar"], module.location)
    loaded = load_sample(Reader(module, files), module.find(files)[0])
    pred = _prediction(loaded, "depth", 0)
    thinned = protocol.fit(pred, loaded.depth, loaded.valid, "depth")
    full = PROTOCOLS["scannet"].fit(pred, loaded.depth, loaded.valid, "depth")
    assert not math.isclose(thinned.scale, full.scale, rel_tol=1e-6), "the thinned fit is what the reference fits"


# ---------------------------------------------------------------------------------------------- pipeline


def test_reading_ahead_holds_a_bounded_number_of_large_samples(monkeypatch):
    running, most = [0], [0]
    samples = [Sample(f"{i}.jpg", f"{i}.bin") for i in range(6)]
    big = np.broadcast_to(np.float32(1), (4032, 6048))  # ETH3D's size, without the memory

    def load(reader, sample: Sample) -> Loaded:
        running[0] += 1
        most[0] = max(most[0], running[0])
        return Loaded(sample, np.broadcast_to(np.uint8(1), (*big.shape, 3)), big, big.astype(bool, copy=False))

    class Releasing(_Recorder):
        def predict_batch(self, images, sizes=None):
            running[0] -= len(images)
            return [np.ones(size, np.float32) for size in sizes]

    monkeypatch.setattr(benchmark_run, "load_sample", load)
    class Unscored(SetRun):
        def _score(self, name, sample, read, prediction):
            return {"image": sample.rgb}

    result = Unscored(BENCHMARKS["eth3d"], {"m": Releasing(518)}, RunOptions({"m": "depth"}, batch_size=4)).run(
        None, samples)
    assert len(result.rows) == 6
    assert most[0] <= 1 + benchmark_run.READ_AHEAD_PIXELS // (4032 * 6048)


class _Recorder:
    """A predictor that records the size of every network call and returns the photo's red channel."""

    output_kind = "depth"

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size
        self.calls: list[list[tuple[int, int]]] = []

    def predict_batch(self, images, sizes=None):
        self.calls.append([image.shape[:2] for image in images])
        assert sizes is None or list(sizes) == [image.shape[:2] for image in images], "these sets' depth is photo-sized"
        return [image[..., 0].astype(np.float32) + 1 for image in images]


def test_large_images_go_one_at_a_time_and_tile_when_the_model_asks(roots, monkeypatch, tmp_path):
    module = BENCHMARKS["eth3d"]
    files = locate(roots["tar"], module.location)
    samples = module.find(files)
    from anydepth_cli.inference.tiling import TileConfig

    small, large = _Recorder(input_size=16), _Recorder(input_size=518)
    options = RunOptions({"small": "depth", "large": "depth"}, batch_size=4, tile_mode="auto",
                         tiles={"small": TileConfig(32, 8, 4), "large": TileConfig(1036, 259, 4)}, save_dir=tmp_path)
    monkeypatch.setattr(benchmark_run, "BATCH_PIXELS", ETH3D_SIZE[0] * ETH3D_SIZE[1])
    result = SetRun(module, {"small": small, "large": large}, options).run(files, samples)
    assert len(result.rows) == 4 and not result.failures
    assert large.calls == [[ETH3D_SIZE]] * 2, "one full-resolution image per network call"
    whole = [call for call in small.calls if ETH3D_SIZE in call]
    assert whole == [[ETH3D_SIZE]] * 2, "one global pass per photo, alone"
    assert {shape for call in small.calls if call not in whole for shape in call} == {(32, 32)}, "then its tiles"
    assert result.tiled == 2
    for model in ("small", "large"):  # with several models, a folder per model
        saved = np.load(tmp_path / model / "eth3d" / Path(samples[0].rgb).with_suffix(".npy"))
        assert saved.shape == ETH3D_SIZE


def test_reading_inference_and_scoring_overlap(roots, monkeypatch):
    """The network call on the first photo waits for the second photo's reading to begin, and the first photo's
    scoring for the second photo's network call: run one stage after the other, either wait would time out."""
    module = BENCHMARKS["scannet"]
    files = locate(roots["tar"], module.location)
    samples = module.find(files)
    reading, predicting = ([threading.Event() for _ in samples] for _ in range(2))
    overlapped = []
    load = benchmark_run.load_sample

    def watched_load(reader, sample):
        reading[samples.index(sample)].set()
        return load(reader, sample)

    class Waiting(_Recorder):
        def predict_batch(self, images, sizes=None):
            predicting[len(self.calls)].set()
            if not self.calls:
                overlapped.append(("read during inference", reading[1].wait(10)))
            return super().predict_batch(images, sizes)

    class WaitingRun(SetRun):
        def _score(self, name, sample, read, prediction):
            if sample == samples[0]:
                overlapped.append(("inference during scoring", predicting[1].wait(10)))
            return super()._score(name, sample, read, prediction)

    monkeypatch.setattr(benchmark_run, "load_sample", watched_load)
    result = WaitingRun(module, {"m": Waiting(518)}, RunOptions({"m": "depth"}, batch_size=1)).run(files, samples)
    assert len(result.rows) == 2
    assert overlapped == [("read during inference", True), ("inference during scoring", True)]


# ------------------------------------------------------------------------------------------------- the CLI


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_against_reference(rows: list[dict[str, str]], predictions: Path, kind: str) -> None:
    """Every per-image row equals the reference protocol applied to the raw prediction the run saved."""
    for row in rows:
        name = row["benchmark"]
        mask = row["depth"].replace("_depth.npy", "_depth_mask.npy") if name == "diode" else None
        gt, valid = reference_ground_truth(name, MAKERS[name](), row["image"], row["depth"], mask)
        pred = np.load(predictions / name / Path(row["image"]).with_suffix(".npy"))
        assert pred.shape == gt.shape, "saved at the ground truth's size (after KITTI's crop)"
        reference = reference_scores(pred, gt, valid, kind, name)
        for key in ("abs_rel", "delta1"):
            assert float(row[key]) == pytest.approx(reference[key], rel=1e-5), (name, key)
        assert row["aligned_as"] == kind and int(row["n_valid"]) == int(valid.sum())


@pytest.mark.slow
def test_cli_scores_the_five_sets_as_the_reference_does(roots, tmp_path):
    out, saved = tmp_path / "report", tmp_path / "predictions"
    result = run_cli("eval", "--benchmark", "all", "--data-root", roots["tar"], "-o", out, "--save-predictions", saved,
                     "--input-size", "56", *tiny_model_args(TINY))
    assert result.returncode == 0, result.stderr
    rows = _rows(out / "eval_per_image.csv")
    assert [(r["benchmark"], r["image"]) for r in rows][:2] == [
        ("nyu", "test/kitchen_0004/rgb_0001.png"), ("nyu", "test/office_0005/rgb_0009.png")], "paths in the set"
    assert [r["benchmark"] for r in rows] == [name for name in NAMES for _ in range(2)]
    _check_against_reference(rows, saved, "depth")

    table = (out / "eval_benchmarks.md").read_text(encoding="utf-8")
    assert "| Model | NYUv2 AbsRel ↓ | NYUv2 δ1 ↑ | KITTI AbsRel ↓ | KITTI δ1 ↑ | ETH3D AbsRel ↓" in table
    model_row = next(line for line in table.splitlines() if line.startswith(f"| {TINY}.pth |"))
    nyu_abs_rel = 100 * np.mean([float(r["abs_rel"]) for r in rows if r["benchmark"] == "nyu"])
    assert model_row.split("|")[2].strip() == f"{nyu_abs_rel:.1f}", "AbsRel % with one decimal"
    assert "| NYUv2 | 2 images (the standard set has 654) | 0 | 0 |" in table
    summary = _rows(out / "eval_benchmarks.csv")
    assert len(summary) == 1 and float(summary[0]["nyu_abs_rel_pct"]) == pytest.approx(nyu_abs_rel, rel=1e-9)
    assert summary[0]["diode_images"] == "2"
    assert "2 of 771" in result.stdout, "the count scored beside the standard count"
    for title in ("NYUv2", "KITTI", "ETH3D", "ScanNet", "DIODE"):
        assert f"{title} ━" in result.stderr, "a progress bar per set"


@pytest.mark.slow
def test_cli_list_tiles_and_disparity_on_eth3d(roots, tmp_path):
    listing = tmp_path / "eth3d_list.txt"
    samples = BENCHMARKS["eth3d"].find(locate(roots["folder"], LOCATIONS["eth3d"]))
    listing.write_text(f"{samples[1].rgb} {samples[1].depth}\n", encoding="utf-8")
    out, saved = tmp_path / "report", tmp_path / "predictions"
    result = run_cli("eval", "--benchmark", "eth3d", "--data-root", roots["folder"], "--list", listing, "--tile", "on",
                     "--output-kind", "disparity", "-o", out, "--save-predictions", saved, "--input-size", "112",
                     *tiny_model_args(TINY))
    assert result.returncode == 0, result.stderr
    rows = _rows(out / "eval_per_image.csv")
    assert [r["image"] for r in rows] == [samples[1].rgb], "only the listed sample"
    _check_against_reference(rows, saved, "disparity")
    assert "| ETH3D | 1 image (the standard set has 454) | 0 | 1 |" in (out / "eval_benchmarks.md").read_text("utf-8")


@pytest.mark.slow
def test_cli_benchmark_mistakes_are_one_line_errors(roots, tmp_path):
    for args, text in (
        (("--benchmark", "nyu,mars", "--data-root", roots["tar"]), "unknown benchmark mars"),
        (("--benchmark", "nyu,kitti", "--data-root", roots["tar"], "--list", tmp_path), "--list is one set's"),
        (("--benchmark", "nyu", "--data-root", tmp_path), "has no nyuv2/nyu_labeled_extracted.tar"),
        (("--benchmark", "nyu", "--data-root", roots["tar"], "--preset", "nyu"), "drop --preset"),
        (("--data-root", roots["tar"], str(tmp_path)), "--data-root: only with --benchmark"),
    ):
        result = run_cli("eval", *args, *tiny_model_args(TINY))
        assert result.returncode == 2 and text in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
