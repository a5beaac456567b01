"""End-to-end evaluation on a synthetic dataset, plus pairing, manifests and ground-truth readers."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pytest
from PIL import Image

from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.evaluation.presets import DEFAULT, NYU
from anydepth_cli.datasets import generic
from anydepth_cli.datasets.archive import Sample
from anydepth_cli.datasets.family import SampleSet, open_set
from anydepth_cli.datasets.files import read_mask
from anydepth_cli.datasets.generic import read_depth
from anydepth_cli.datasets.lists import read_list
from anydepth_cli.evaluation.folder_run import Alignment, run_eval
from anydepth_cli.evaluation.report import write_eval_report

SIZES = [(48, 64), (48, 64), (40, 56), (48, 64), (36, 60)]


class OraclePredictor:
    """Returns the true depth or disparity (`returns`) up to a random scale and shift per call, finding the GT by the image's bytes.

    It declares `declares` as its output kind (by default what it returns).
    """

    input_size = 518

    def __init__(self, data: SampleSet, seed: int, noise: float = 0.0, returns: str = "disparity",
                 declares: str | None = None) -> None:
        self.truth = {}
        for sample in data.samples:
            gt = read_depth(data.reader.where(sample.depth), 1000.0).astype(np.float64)
            truth = gt if returns == "depth" else np.where(gt > 0, 1.0 / np.maximum(gt, 1e-9), 0.0)
            self.truth[self._key(data.reader.rgb(sample))] = truth
        self.output_kind = declares or returns
        self.rng = np.random.default_rng(seed)
        self.noise = noise

    @staticmethod
    def _key(image: np.ndarray) -> str:
        return hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()

    def predict_batch(self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        out = []
        for image, size in zip(images, sizes):
            truth = self.truth[self._key(image)]
            assert truth.shape == size, "eval asks for maps at the ground truth's size"
            scale, shift = self.rng.uniform(0.5, 3.0), self.rng.uniform(-0.1, 0.1) * truth.max()
            pred = scale * truth + shift
            if self.noise:
                pred = pred + self.noise * self.rng.standard_normal(pred.shape)
            out.append(pred.astype(np.float32))
        return out


def _write_dataset(root: Path) -> SampleSet:
    rng = np.random.default_rng(11)
    (root / "image").mkdir(parents=True)
    (root / "depth").mkdir()
    for i, (h, w) in enumerate(SIZES):
        y, x = np.mgrid[0:h, 0:w]
        depth_mm = np.round(800 + 60 * x + 30 * y + rng.uniform(0, 500, size=(h, w))).astype(np.uint16)
        depth_mm[rng.random((h, w)) < 0.1] = 0  # invalid pixels
        cv2.imwrite(str(root / "depth" / f"frame{i:02d}.png"), depth_mm)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(root / "image" / f"frame{i:02d}.png")
    return open_set(generic.family(), root)


@pytest.fixture()
def dataset(tmp_path: Path) -> SampleSet:
    return _write_dataset(tmp_path / "data")


def test_oracle_eval_is_perfect_and_report_is_written(dataset: SampleSet, tmp_path: Path) -> None:
    assert len(dataset) == len(SIZES)
    ticks: list[int] = []
    predictors = {"oracle": OraclePredictor(dataset, seed=1), "noisy": OraclePredictor(dataset, seed=2, noise=0.05)}
    result = run_eval(dataset, predictors, DEFAULT, lambda: ticks.append(1), batch_size=2)
    assert len(ticks) == len(SIZES)
    assert not result.failures
    assert len(result.rows) == 2 * len(SIZES)
    oracle = result.aggregates["oracle"]
    assert oracle["abs_rel"] < 1e-6 and oracle["rmse"] < 1e-5
    assert oracle["delta1"] == 1.0 and oracle["n_images"] == len(SIZES)
    assert all(r["abs_rel"] < 1e-6 for r in result.rows if r["model"] == "oracle")
    assert result.aggregates["noisy"]["abs_rel"] > 1e-2

    files = write_eval_report(result, tmp_path / "report")
    assert [f.name for f in files] == ["eval_per_image.csv", "eval_summary.md", "eval_abs_rel.png"]
    with open(files[0], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(SIZES)
    assert {r["model"] for r in rows} == {"oracle", "noisy"}
    assert sorted(r["image"] for r in rows if r["model"] == "oracle") == sorted(dataset.reader.where(s.rgb) for s in dataset.samples)
    assert all(float(r["abs_rel"]) < 1e-6 and float(r["delta1"]) == 1.0 for r in rows if r["model"] == "oracle")
    markdown = files[1].read_text(encoding="utf-8")
    assert "| oracle | 5 | disparity (declared) |" in markdown and "| noisy | 5 |" in markdown and "AbsRel" in markdown
    assert "Output kind check" not in markdown
    assert files[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "report").glob(".*tmp-*"))


def test_eval_with_nyu_crop_and_a_broken_sample(dataset: SampleSet, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    pairs = SampleSet(dataset.reader, [*dataset.samples, Sample(str(broken), dataset.samples[0].depth)])
    ticks: list[int] = []
    result = run_eval(pairs, {"oracle": OraclePredictor(dataset, seed=3)}, NYU, lambda: ticks.append(1))
    assert len(ticks) == len(pairs)
    assert [image for image, _ in result.failures] == [str(broken)]
    assert result.aggregates["oracle"]["abs_rel"] < 1e-6
    first = result.rows[0]
    gt = read_depth(dataset.reader.where(dataset.samples[0].depth))
    assert first["n_valid"] == int(NYU.valid_mask(gt).sum()) < int((gt > 0).sum())
    assert "broken.png" in (write_eval_report(result, tmp_path / "r")[1]).read_text(encoding="utf-8")


def test_run_eval_needs_a_model_a_known_mode_and_a_known_declared_kind(dataset: SampleSet) -> None:
    with pytest.raises(UsageError):
        run_eval(dataset, {}, DEFAULT)
    with pytest.raises(UsageError, match="--output-kind must be one of model, depth, disparity, auto"):
        run_eval(dataset, {"oracle": OraclePredictor(dataset, seed=0)}, DEFAULT, output_kind="inverse")
    with pytest.raises(UsageError, match="'oracle' declares output 'inverse'"):
        run_eval(dataset, {"oracle": OraclePredictor(dataset, seed=0, declares="inverse")}, DEFAULT)


def _other(kind: str) -> str:
    return "disparity" if kind == "depth" else "depth"


@pytest.mark.parametrize("returns", ["depth", "disparity"])
def test_an_oracle_is_exact_in_its_own_space_only(dataset: SampleSet, returns: str) -> None:
    wrong = _other(returns)
    right = run_eval(dataset, {"oracle": OraclePredictor(dataset, seed=4, returns=returns)}, DEFAULT, batch_size=2)
    misdeclared = run_eval(dataset, {"oracle": OraclePredictor(dataset, seed=4, returns=returns, declares=wrong)}, DEFAULT)
    overridden = run_eval(dataset, {"oracle": OraclePredictor(dataset, seed=4, returns=returns)}, DEFAULT,
                          output_kind=wrong)
    assert right.alignments["oracle"] == Alignment(returns, returns, "declared")
    assert misdeclared.alignments["oracle"] == Alignment(wrong, wrong, "declared")
    assert overridden.alignments["oracle"] == Alignment(wrong, returns, "override")
    assert all(r["aligned_as"] == returns and r["kind_source"] == "declared" for r in right.rows)
    assert all(r["aligned_as"] == wrong and r["kind_source"] == "override" for r in overridden.rows)
    good = right.aggregates["oracle"]
    assert good["abs_rel"] <= 1e-6 and good["delta1"] == 1.0
    worst_right = max(r["abs_rel"] for r in right.rows)
    for result in (misdeclared, overridden):
        assert result.aggregates["oracle"]["abs_rel"] >= 0.05
        assert min(r["abs_rel"] for r in result.rows) >= 3 * worst_right


@pytest.mark.parametrize("declared_right", [True, False], ids=["declared-right", "declared-wrong"])
def test_auto_detects_each_oracle_kind(dataset: SampleSet, tmp_path: Path, declared_right: bool) -> None:
    predictors = {
        f"{kind}-oracle": OraclePredictor(dataset, seed=5, returns=kind, declares=kind if declared_right else _other(kind))
        for kind in ("depth", "disparity")
    }
    result = run_eval(dataset, predictors, NYU, output_kind="auto", batch_size=3)
    for kind in ("depth", "disparity"):
        alignment = result.alignments[f"{kind}-oracle"]
        assert (alignment.kind, alignment.source, alignment.agrees) == (kind, "detected", declared_right)
        check = alignment.check
        right, wrong = (check.abs_rel_depth, check.abs_rel_disparity)[:: 1 if kind == "depth" else -1]
        assert check.detected == kind and right <= 1e-6 and wrong >= 0.05 and check.ratio >= 3
        assert result.aggregates[f"{kind}-oracle"]["abs_rel"] == pytest.approx(right, rel=1e-12)
    assert len(result.rows) == 2 * len(dataset)
    assert all(r["aligned_as"] == str(r["model"]).split("-")[0] and r["kind_source"] == "detected" for r in result.rows)

    csv_path, md_path, _ = write_eval_report(result, tmp_path / "report")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["model"], r["aligned_as"], r["kind_source"]) for r in rows} == {
        ("depth-oracle", "depth", "detected"), ("disparity-oracle", "disparity", "detected")}
    markdown = md_path.read_text(encoding="utf-8")
    assert "| depth-oracle | 5 | depth (detected) |" in markdown
    assert "| disparity-oracle | 5 | disparity (detected) |" in markdown
    assert "## Output kind check" in markdown
    check_rows = [line for line in markdown.splitlines() if line.startswith("| depth-oracle | ") and "×" in line]
    declared = "depth" if declared_right else "disparity"
    assert len(check_rows) == 1 and check_rows[0].startswith(f"| depth-oracle | {declared} | 0.0000 | ")
    assert check_rows[0].endswith("| depth | yes |" if declared_right else "| depth | no |")


def test_side_by_side_layout_with_masks(tmp_path: Path) -> None:
    rgb = np.zeros((6, 8, 3), dtype=np.uint8)
    for name in ("a", "b", "c"):
        Image.fromarray(rgb).save(tmp_path / f"{name}.jpg")
    np.save(tmp_path / "a_depth.npy", np.ones((6, 8), dtype=np.float32))
    cv2.imwrite(str(tmp_path / "b_depth.png"), np.full((6, 8), 1000, dtype=np.uint16))
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2:] = 255
    cv2.imwrite(str(tmp_path / "b_mask.png"), mask)
    pairs = open_set(generic.family(), tmp_path).samples  # c has no depth: skipped
    assert pairs == [Sample("a.jpg", "a_depth.npy", None), Sample("b.jpg", "b_depth.png", "b_mask.png")]
    assert pairs[1].mask is not None and read_mask(tmp_path / pairs[1].mask).sum() == 4 * 8
    (tmp_path / "a_depth.pfm").write_bytes(b"x")  # a second depth file for "a"
    with pytest.raises(UsageError, match="several depth"):
        open_set(generic.family(), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no image/depth pairs"):
        open_set(generic.family(), tmp_path / "empty")
    with pytest.raises(UsageError, match="not a folder"):
        open_set(generic.family(), tmp_path / "missing")


def test_list_files_of_pairs_parse_and_name_a_bad_line(dataset: SampleSet, tmp_path: Path) -> None:
    root = dataset.reader.files.root
    listing = root / "list.txt"
    listing.write_text(
        "# image,depth[,mask]\n\nimage/frame00.png, depth/frame00.png\nimage/frame01.png depth/frame01.png\tdepth/frame01.png\n"
    )
    listed = read_list(listing, generic.family())
    assert listed.base == root and listed.samples == [
        Sample("image/frame00.png", "depth/frame00.png"),
        Sample("image/frame01.png", "depth/frame01.png", "depth/frame01.png"),
    ]
    bad_lines = {
        "image/frame00.png\n": 1,
        "# ok\nimage/frame00.png,depth/frame00.png\n\nimage/frame01.png,,\n": 4,
        "image/frame00.png,depth/frame00.png,a,b\n": 1,
    }
    for text, line in bad_lines.items():
        listing.write_text(text)
        with pytest.raises(UsageError, match=rf"list\.txt:{line}:"):
            read_list(listing, generic.family())
    listing.write_text("# nothing\n")
    with pytest.raises(UsageError, match="names no samples"):
        read_list(listing, generic.family())


def test_a_listed_pair_whose_files_are_missing_is_named_not_fatal(dataset: SampleSet, tmp_path: Path) -> None:
    root = dataset.reader.files.root
    listing = root / "list.txt"
    listing.write_text("image/frame00.png,depth/frame00.png\nimage/frame01.png,depth/missing.png\n")
    listed = read_list(listing, generic.family())
    result = run_eval(SampleSet(dataset.reader, listed.samples), {"oracle": OraclePredictor(
        SampleSet(dataset.reader, dataset.samples[:1]), seed=0)}, DEFAULT)
    assert [Path(str(row["image"])).name for row in result.rows] == ["frame00.png"]
    [(image, reason)] = result.failures
    assert image.endswith("frame01.png") and "missing.png" in reason


def test_depth_readers(tmp_path: Path) -> None:
    raw = np.array([[0, 256, 512], [1024, 65535, 128]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "kitti.png"), raw)
    np.testing.assert_allclose(read_depth(tmp_path / "kitti.png", 256.0), raw / 256.0, rtol=1e-6)

    arr = np.array([[1.5, np.nan], [-2.0, 4.0]], dtype=np.float32)
    np.save(tmp_path / "d.npy", arr)
    np.testing.assert_array_equal(read_depth(tmp_path / "d.npy"), [[1.5, 0.0], [0.0, 4.0]])

    top_down = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    with open(tmp_path / "d.pfm", "wb") as f:  # little-endian, rows stored bottom to top
        f.write(b"Pf\n3 2\n-1.0\n")
        f.write(top_down[::-1].astype("<f4").tobytes())
    np.testing.assert_array_equal(read_depth(tmp_path / "d.pfm"), top_down)
    (tmp_path / "short.pfm").write_bytes(b"Pf\n3 2\n-1.0\n" + b"\0" * 8)
    with pytest.raises(InputError, match="truncated"):
        read_depth(tmp_path / "short.pfm")

    (tmp_path / "d.exr").write_bytes(b"not really an exr")
    with pytest.raises(InputError, match="EXR"):
        read_depth(tmp_path / "d.exr")

    cv2.imwrite(str(tmp_path / "colour.png"), np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="single-channel"):
        read_depth(tmp_path / "colour.png")
    with pytest.raises(InputError, match="unsupported"):
        read_depth(tmp_path / "d.txt")
