"""Eval metrics, alignment and presets against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.evaluation.presets import DEFAULT, KITTI, NYU, get_preset, kitti_crop, nyu_crop
from anydepth_cli.evaluation.metrics import KindCheck, aggregate, align_and_convert, depth_metrics, evaluate_sample


def test_depth_metrics_match_hand_computed_values() -> None:
    gt = np.array([[1.0, 2.0, 4.0, 5.0, 2.0, 1.0, 0.0]])
    pred = np.array([[1.1, 2.0, 6.0, 6.0, 1.0, 1.8, 100.0]])
    mask = np.array([[True] * 6 + [False]])
    # ratios max(d/g, g/d): 1.1, 1, 1.5, 1.2, 2, 1.8 ; |d-g|/g: .1, 0, .5, .2, .5, .8
    m = depth_metrics(pred, gt, mask)
    assert m["abs_rel"] == pytest.approx(2.1 / 6, abs=1e-12)
    assert m["delta1"] == pytest.approx(3 / 6)
    assert m["delta2"] == pytest.approx(4 / 6)
    assert m["delta3"] == pytest.approx(5 / 6)
    # squared errors: .01, 0, 4, 1, 1, .64
    assert m["rmse"] == pytest.approx(math.sqrt(6.65 / 6), abs=1e-12)


def test_alignment_recovers_known_scale_and_shift_exactly() -> None:
    rng = np.random.default_rng(3)
    pred = rng.uniform(0.1, 1.0, size=(24, 32))
    scale, shift = 2.5, 0.3
    gt = 1.0 / (scale * pred + shift)
    valid = np.ones(pred.shape, dtype=bool)
    valid[:3] = False
    pred_noisy = pred.copy()
    pred_noisy[:3] = rng.uniform(-5, 5, size=(3, 32))  # junk outside the valid pixels
    depth, fit = align_and_convert(pred_noisy, gt, valid, 1e-3, 1e3, "disparity")
    assert abs(fit.scale - scale) < 1e-9
    assert abs(fit.shift - shift) < 1e-9
    np.testing.assert_allclose(depth[valid], gt[valid], rtol=1e-9)


def test_negative_aligned_disparity_is_clamped_to_max_depth() -> None:
    pred = np.array([[0.5, 1.0, 2.0, -4.0]])
    gt = 1.0 / np.array([[0.5, 1.0, 2.0, 1.0]])
    valid = np.array([[True, True, True, False]])
    depth, fit = align_and_convert(pred, gt, valid, min_depth=0.1, max_depth=20.0, kind="disparity")
    assert fit.scale == pytest.approx(1.0) and fit.shift == pytest.approx(0.0, abs=1e-12)
    assert depth[0, 3] == pytest.approx(20.0)
    assert np.all(np.isfinite(depth)) and np.all(depth > 0)


def test_aligned_depth_is_clipped_to_the_preset_range() -> None:
    pred = np.array([[1.0, 2.0, 3.0, 1000.0]])
    gt = 1.0 / np.array([[1.0, 2.0, 3.0, 1.0]])
    valid = np.array([[True, True, True, False]])
    depth, _ = align_and_convert(pred, gt, valid, min_depth=0.01, max_depth=10.0, kind="disparity")
    assert depth[0, 3] == pytest.approx(0.01)


def test_depth_alignment_fits_the_depth_itself_and_clips_to_the_range() -> None:
    rng = np.random.default_rng(4)
    gt = rng.uniform(0.5, 8.0, size=(24, 32))
    scale, shift = 0.4, -0.1  # the prediction is (gt - shift) / scale: alignment maps it back
    pred = (gt - shift) / scale
    valid = np.ones(gt.shape, dtype=bool)
    valid[0, :2] = False
    pred[0, :2] = (-50.0, 1e6)  # aligned to negative and huge depth: clipped
    depth, fit = align_and_convert(pred, gt, valid, min_depth=0.1, max_depth=10.0, kind="depth")
    assert fit.scale == pytest.approx(scale, rel=1e-12) and fit.shift == pytest.approx(shift, abs=1e-12)
    np.testing.assert_allclose(depth[valid], gt[valid], rtol=1e-12)
    assert depth[0, 0] == 0.1 and depth[0, 1] == 10.0


def test_the_wrong_space_scores_worse() -> None:
    gt = np.linspace(0.5, 10.0, 400).reshape(20, 20)
    valid = np.ones(gt.shape, dtype=bool)
    for truth, kind, other in ((gt, "depth", "disparity"), (1.0 / gt, "disparity", "depth")):
        right = evaluate_sample(2.0 * truth + 0.3, gt, valid, DEFAULT, kind)["abs_rel"]
        wrong = evaluate_sample(2.0 * truth + 0.3, gt, valid, DEFAULT, other)["abs_rel"]
        assert right < 1e-12 and wrong > 0.1


def test_kind_check_detects_the_lower_abs_rel() -> None:
    check = KindCheck(abs_rel_depth=0.02, abs_rel_disparity=0.1)
    assert check.detected == "depth" and check.ratio == pytest.approx(5.0)
    assert KindCheck(0.3, 0.1).detected == "disparity" and KindCheck(0.3, 0.1).ratio == pytest.approx(3.0)
    assert KindCheck(0.0, 0.1).ratio == math.inf
    for undecided in (KindCheck(0.1, 0.1), KindCheck(math.nan, 0.1), KindCheck(math.nan, math.nan)):
        assert undecided.detected is None and math.isnan(undecided.ratio)


def test_evaluate_sample_uses_nyu_crop_and_range() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 9.0, size=(480, 640))
    gt[100, 100] = 12.0  # beyond NYU's 10 m: not scored
    pred = 3.0 * (1.0 / gt) + 0.2
    pred[:45] = rng.uniform(0, 50, size=(45, 640))  # outside the Eigen crop: not scored
    pred[100, 100] = 50.0
    row = evaluate_sample(pred.astype(np.float32), gt, None, NYU, "disparity")
    assert row["abs_rel"] < 1e-6
    assert row["delta1"] == 1.0
    assert row["n_valid"] == 426 * 560 - 1
    assert row["scale"] == pytest.approx(1 / 3, rel=1e-5)  # maps the prediction onto 1/gt


def test_evaluate_sample_honours_the_mask_and_default_range() -> None:
    gt = np.linspace(1.0, 4.0, 64).reshape(8, 8)
    pred = 1.0 / gt
    mask = np.ones_like(gt, dtype=bool)
    mask[0, :4] = False
    pred[0, :4] = 9.0  # wrong, but masked out
    row = evaluate_sample(pred, gt, mask, DEFAULT, "disparity")
    assert row["abs_rel"] < 1e-12 and row["rmse"] < 1e-12 and row["n_valid"] == 60


def test_evaluate_sample_without_valid_pixels_is_an_input_error() -> None:
    with pytest.raises(InputError):
        evaluate_sample(np.ones((4, 4)), np.zeros((4, 4)), None, DEFAULT, "depth")


def test_aggregate_is_a_mean_over_images() -> None:
    rows = [
        {"abs_rel": 0.1, "delta1": 1.0, "delta2": 1.0, "delta3": 1.0, "rmse": 1.0, "n_valid": 10},
        {"abs_rel": 0.3, "delta1": 0.5, "delta2": 1.0, "delta3": 1.0, "rmse": 3.0, "n_valid": 1000},
    ]
    agg = aggregate(rows)
    assert agg["abs_rel"] == pytest.approx(0.2)
    assert agg["delta1"] == pytest.approx(0.75)
    assert agg["rmse"] == pytest.approx(2.0)
    assert agg["n_images"] == 2
    assert math.isnan(aggregate([])["abs_rel"])


def test_nyu_and_kitti_crop_shapes() -> None:
    rows, cols = nyu_crop(480, 640)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (45, 471, 41, 601)
    assert np.zeros((480, 640))[rows, cols].shape == (426, 560)
    rows, cols = kitti_crop(375, 1242)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (153, 371, 44, 1197)
    assert np.zeros((375, 1242))[rows, cols].shape == (218, 1153)
    assert KITTI.valid_mask(np.full((375, 1242), 5.0)).sum() == 218 * 1153
    assert NYU.valid_mask(np.full((480, 640), 5.0)).sum() == 426 * 560


def test_preset_lookup() -> None:
    assert get_preset("NYU") is NYU
    assert get_preset("kitti").max_depth == 80.0
    assert get_preset("default").crop is None
    with pytest.raises(UsageError, match="unknown eval preset"):
        get_preset("eth3d")


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind must be one of depth, disparity"):
        align_and_convert(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2), bool), 0.1, 10.0, "inverse")
