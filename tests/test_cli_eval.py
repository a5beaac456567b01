"""`anydepth eval` and `anydepth score` end to end, as subprocesses, on small synthetic datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, save_photo, tiny_model_args

pytestmark = pytest.mark.slow

SIZE = (48, 64)


def assert_one_line_error(result, code: int, *texts: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def make_dataset(root: Path, count: int = 3) -> Path:
    """`root/image/frameN.png` photos with `root/depth/frameN.png` 16-bit depth in millimetres (a tilted plane)."""
    height, width = SIZE
    y, x = np.mgrid[0:height, 0:width]
    (root / "depth").mkdir(parents=True)
    for i in range(count):
        save_photo(root / "image" / f"frame{i}.png", width, height, seed=i)
        depth_mm = (1500 + 40 * x + 25 * (i + 1) * y).astype(np.uint16)
        assert cv2.imwrite(str(root / "depth" / f"frame{i}.png"), depth_mm)
    return root


def test_eval_writes_csv_markdown_and_plot(tmp_path):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "report"
    result = run_cli("eval", data, "-o", out, "--input-size", "56", *tiny_model_args())
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "eval_per_image.csv")
    assert sorted(Path(r["image"]).name for r in rows) == ["frame0.png", "frame1.png", "frame2.png"]
    assert {r["model"] for r in rows} == {"tiny_dav2_sdt.pth"}
    for row in rows:
        assert 0.0 <= float(row["abs_rel"]) < 10 and 0.0 <= float(row["delta1"]) <= 1.0
        assert int(row["n_valid"]) == SIZE[0] * SIZE[1]
        assert (row["aligned_as"], row["kind_source"]) == ("depth", "declared"), "an SDT fixture declares depth"
    summary = (out / "eval_summary.md").read_text(encoding="utf-8")
    header = next(line for line in summary.splitlines() if line.startswith("| Model"))
    assert "AbsRel" in header and "δ1" in header
    assert "| tiny_dav2_sdt.pth | 3 | depth (declared) |" in summary and "Output kind check" not in summary
    with Image.open(out / "eval_abs_rel.png") as plot:
        assert plot.format == "PNG"
    assert "AbsRel" in result.stdout and "tiny_dav2_sdt.pth" in result.stdout, "aggregate table on stdout"
    assert "depth (declared)" in result.stdout


def test_eval_auto_checks_the_declared_kind_and_reports_both_abs_rels(tmp_path):
    data = make_dataset(tmp_path / "data")
    checkpoint, arch = tiny_model_args()[1::2]
    fixture = json.loads(Path(arch).read_text(encoding="utf-8"))
    fixture["config"]["output"] = "disparity"  # an SDT head declaring disparity: the declaration is read from here
    declared_disparity = tmp_path / "disparity.json"
    declared_disparity.write_text(json.dumps(fixture), encoding="utf-8")
    out = tmp_path / "report"
    result = run_cli("eval", data, "-o", out, "--input-size", "56", "--checkpoint", checkpoint,
                     "--arch", declared_disparity, "--output-kind", "auto")
    assert result.returncode == 0, result.stderr
    summary = (out / "eval_summary.md").read_text(encoding="utf-8")
    check = next(line for line in summary.splitlines() if line.startswith("| tiny_dav2_sdt.pth | disparity | "))
    cells = [cell.strip() for cell in check.strip("|").split("|")]
    abs_rel = {"depth": float(cells[2]), "disparity": float(cells[3])}
    detected = min(abs_rel, key=abs_rel.get)
    ratio = max(abs_rel.values()) / min(abs_rel.values())  # of the 4-decimal table values: close, not equal
    assert cells[4].endswith("×") and float(cells[4][:-1]) == pytest.approx(ratio, rel=1e-2)
    assert cells[5:] == [detected, "yes" if detected == "disparity" else "no"]
    assert f"| tiny_dav2_sdt.pth | 3 | {detected} (detected) |" in summary
    rows = read_csv(out / "eval_per_image.csv")
    assert {(r["aligned_as"], r["kind_source"]) for r in rows} == {(detected, "detected")}
    mean_abs_rel = sum(float(r["abs_rel"]) for r in rows) / len(rows)
    assert abs(mean_abs_rel - abs_rel[detected]) <= 5e-5, "the main table uses the supported kind"
    assert "output kind check" in result.stdout and "AbsRel as disparity" in result.stdout
    assert cells[2] in result.stdout and cells[3] in result.stdout, "both AbsRels on the terminal"
    assert "declares disparity" in result.stderr


def test_eval_unknown_output_kind_is_a_usage_error(tmp_path):
    data = make_dataset(tmp_path / "data", count=1)
    result = run_cli("eval", data, "--output-kind", "inverse", "-o", tmp_path / "report", *tiny_model_args())
    assert_one_line_error(result, 2, "--output-kind must be one of model, depth, disparity, auto")
    assert not (tmp_path / "report").exists()


def test_eval_names_unusable_samples_and_exits_1(tmp_path):
    data = make_dataset(tmp_path / "data", count=2)
    cv2.imwrite(str(data / "depth" / "frame1.png"), np.zeros(SIZE, np.uint16))  # no valid pixel
    out = tmp_path / "report"
    result = run_cli("eval", data, "-o", out, "--input-size", "56", *tiny_model_args())
    assert_one_line_error(result, 1, "frame1.png")
    assert [Path(r["image"]).name for r in read_csv(out / "eval_per_image.csv")] == ["frame0.png"]
    assert "frame1.png" in (out / "eval_summary.md").read_text(encoding="utf-8")


def test_eval_manifest_with_a_bad_line_names_it(tmp_path):
    data = make_dataset(tmp_path / "data", count=2)
    manifest = data / "list.txt"
    manifest.write_text("# image,depth\nimage/frame0.png,depth/frame0.png\n\nimage/frame1.png\n", encoding="utf-8")
    result = run_cli("eval", manifest, "-o", tmp_path / "report", *tiny_model_args())
    assert_one_line_error(result, 2, "list.txt:4", "RGB DEPTH [MASK]")
    assert not (tmp_path / "report").exists(), "nothing may be written on a usage error"


def test_eval_unknown_preset_is_a_usage_error(tmp_path):
    data = make_dataset(tmp_path / "data", count=1)
    result = run_cli("eval", data, "--preset", "sintel", "-o", tmp_path / "report", *tiny_model_args())
    assert_one_line_error(result, 2, "unknown eval preset 'sintel'", "nyu", "kitti")


def depth_maps(folder: Path) -> None:
    """A constant, a smooth and a noisy 64×64 depth map, in three formats, one in a subfolder."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:64, 0:64].astype(np.float64)
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "constant.npy", np.full((64, 64), 2.5, np.float32))
    smooth_mm = np.round(1000 * (1.0 + 0.04 * x + 0.02 * y)).astype(np.uint16)
    assert cv2.imwrite(str(folder / "sub" / "smooth.png"), smooth_mm)
    np.save(folder / "noisy.npy", rng.uniform(1.0, 10.0, (64, 64)).astype(np.float32))
    (folder / "notes.txt").write_text("not a depth map")


def test_eval_reads_a_named_training_set_list_re_rooted(tmp_path):
    from test_train_data import FOREIGN, H, W, depth_of, make_vkitti, vkitti, write_list

    data = tmp_path / "data"
    images = make_vkitti(data, 2)
    rows = [(f"{FOREIGN}/vkitti2/{image.relative_to(data)}", f"{FOREIGN}/vkitti2/{depth_of(vkitti, data, image).relative_to(data)}")
            for image in images]
    write_list(tmp_path / "test.txt", rows)
    out = tmp_path / "report"
    result = run_cli("eval", f"vkitti:{tmp_path / 'test.txt'}", "--data-root", data, "-o", out, "--input-size", "56",
                     *tiny_model_args())
    assert result.returncode == 0, result.stderr
    assert f"replaced the prefix {FOREIGN}/vkitti2 of its paths with {data}" in " ".join(result.stderr.split())
    scored = read_csv(out / "eval_per_image.csv")
    assert [Path(r["image"]) for r in scored] == images
    assert all(int(r["n_valid"]) == (H - 3) * W for r in scored), "the sky's rows (65535) are not depth"
    result = run_cli("eval", f"vkitti:{tmp_path / 'test.txt'}", "--depth-scale", "100", *tiny_model_args())
    assert_one_line_error(result, 2, "own units: drop --depth-scale")


def test_score_ranks_and_keeps(tmp_path):
    maps = tmp_path / "maps"
    depth_maps(maps)
    out = tmp_path / "scores"
    result = run_cli("score", maps, "--keep", "0.67", "--workers", "2", "-o", out)
    assert result.returncode == 0, result.stderr
    rows = {Path(r["path"]).name: r for r in read_csv(out / "scores.csv")}
    assert sorted(rows) == ["constant.npy", "noisy.npy", "smooth.png"]
    assert not any(r["error"] for r in rows.values())
    s_dist = {name: float(r["s_dist"]) for name, r in rows.items()}
    assert min(s_dist, key=s_dist.get) == "constant.npy"
    s_grad = {name: float(r["s_grad"]) for name, r in rows.items()}
    assert min(s_grad, key=s_grad.get) == "noisy.npy"
    # One of three dropped on each score: the constant map (S_dist) and the noisy one (S_grad).
    kept = (out / "keep.txt").read_text(encoding="utf-8").splitlines()
    assert [Path(p).name for p in kept] == ["smooth.png"]
    with Image.open(out / "scores.png") as plot:
        assert plot.format == "PNG"
    assert "kept" in result.stderr and "1 of 3" in result.stderr


def test_score_names_an_unreadable_file_and_exits_1(tmp_path):
    maps = tmp_path / "maps"
    depth_maps(maps)
    (maps / "broken.pfm").write_bytes(b"not a pfm")
    out = maps / "scores"  # inside the scored folder, holding a previous run's plot: that must not be scored
    out.mkdir()
    Image.new("RGB", (8, 8)).save(out / "scores.png")
    result = run_cli("score", maps, "--workers", "1", "-o", out)
    assert_one_line_error(result, 1, "broken.pfm")
    rows = {Path(r["path"]).name: r for r in read_csv(out / "scores.csv")}
    assert sorted(rows) == ["broken.pfm", "constant.npy", "noisy.npy", "smooth.png"]
    assert rows["broken.pfm"]["error"] and rows["smooth.png"]["error"] == ""
    assert not (out / "keep.txt").exists()


@pytest.mark.parametrize("case", ["empty", "bad-keep"])
def test_score_usage_errors_exit_2(tmp_path, case):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no depth here")
    args, text = {
        "empty": ([tmp_path / "empty"], "no depth files"),
        "bad-keep": ([tmp_path / "empty", "--keep", "1.5"], "--keep"),
    }[case]
    result = run_cli("score", *args, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, text)
    assert not (tmp_path / "out").exists()
