"""Tests for anydepth_cli.io.writers: atomic writes, colour maps and the depth file formats."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth_cli.errors import InputError, OutputError, UsageError
from anydepth_cli.io.writers import (
    DEFAULT_CMAP,
    PNG16_MAX_KEY,
    PNG16_MIN_KEY,
    atomic_write,
    available_cmaps,
    claim_output_dir,
    colorize,
    is_temp_name,
    near_is_dark,
    read_png16,
    side_by_side,
    temp_beside,
    write_color_png,
    write_exr,
    write_npy,
    write_png16,
)


def _ramp(height: int = 8, width: int = 32) -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))


def _brightness(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.int32).sum(axis=-1)


# --- atomic_write ----------------------------------------------------------------------


def test_atomic_write_creates_folders_and_uses_a_hidden_temp_with_the_suffix(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "depth.png"
    seen: list[Path] = []

    def write(temp: Path) -> None:
        seen.append(temp)
        temp.write_bytes(b"data")

    atomic_write(target, write, fsync=True)

    assert target.read_bytes() == b"data"
    (temp,) = seen
    assert temp.parent == target.parent and temp.name.startswith(".depth.tmp-") and temp.suffix == ".png"
    assert sorted(p.name for p in target.parent.iterdir()) == ["depth.png"]


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_atomic_write_failure_leaves_no_file_and_no_temp(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "out.png"

    def write(temp: Path) -> None:
        temp.write_bytes(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, write)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")

    def write(temp: Path) -> None:
        temp.write_bytes(b"new but broken")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_write_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_bytes(b"old")
    atomic_write(target, lambda temp: temp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_atomic_write_path_through_a_regular_file_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"I am a file")
    with pytest.raises(OutputError, match="cannot create folder") as info:
        atomic_write(blocker / "sub" / "out.png", lambda temp: temp.write_bytes(b"x"))
    assert "\n" not in str(info.value)
    assert blocker.read_bytes() == b"I am a file"


def test_atomic_write_os_error_while_writing_is_an_output_error(tmp_path: Path) -> None:
    def write(temp: Path) -> None:
        temp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write(tmp_path / "out.png", write)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores 0o500")
def test_atomic_write_read_only_folder_is_an_output_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            atomic_write(folder / "out.png", lambda temp: temp.write_bytes(b"x"))
    finally:
        folder.chmod(0o700)


# --- colorize --------------------------------------------------------------------------


def test_colorize_shape_dtype_and_full_range() -> None:
    rgb = colorize(_ramp())
    assert rgb.shape == (8, 32, 3) and rgb.dtype == np.uint8
    import matplotlib

    lut = np.round(matplotlib.colormaps[DEFAULT_CMAP]([0.0, 1.0])[:, :3] * 255)
    np.testing.assert_array_equal(rgb[0, 0], lut[0])
    np.testing.assert_array_equal(rgb[0, -1], lut[1])


def test_colorize_near_is_bright_and_invert_flips() -> None:
    ramp = _ramp()
    normal = _brightness(colorize(ramp))
    assert normal[0, -1] > normal[0, 0]
    inverted = colorize(ramp, invert=True)
    np.testing.assert_array_equal(inverted, colorize(ramp[:, ::-1]))


def test_colorize_gray_is_greyscale_and_monotone() -> None:
    rgb = colorize(_ramp(width=256), cmap="gray")
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    row = rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0)
    flipped = colorize(_ramp(width=256), cmap="gray", invert=True)[0, :, 0].astype(int)
    assert np.abs(flipped - (255 - row)).max() <= 1


def test_colorize_constant_map_does_not_crash_or_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = colorize(np.full((4, 5), 3.5, dtype=np.float32))
    assert rgb.shape == (4, 5, 3)
    assert (rgb == rgb[0, 0]).all()


def test_colorize_nan_is_black_and_rest_still_spans_the_map() -> None:
    disparity = _ramp(width=256).astype(np.float64)
    disparity[0, 10] = np.nan
    disparity[1, 20] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = colorize(disparity, cmap="gray")
    np.testing.assert_array_equal(rgb[0, 10], [0, 0, 0])
    np.testing.assert_array_equal(rgb[1, 20], [0, 0, 0])
    assert rgb[2, -1, 0] == 255
    assert not colorize(np.full((3, 3), np.nan), cmap="gray").any()


def test_colorize_uses_robust_percentiles() -> None:
    disparity = _ramp(width=256)
    disparity[0, 0] = 1e6  # one outlier must not squash the rest into one colour
    grey = colorize(disparity, cmap="gray")[..., 0]
    assert grey[1:].max() >= 250 and grey[1:].min() <= 5


def test_colorize_mostly_constant_map_falls_back_to_min_max() -> None:
    disparity = np.zeros((100, 100), dtype=np.float32)
    disparity[:2, :2] = 1.0  # fewer than 1% of the pixels differ
    grey = colorize(disparity, cmap="gray")[..., 0]
    assert grey[0, 0] == 255 and grey[50, 50] == 0


def test_colorize_value_range_clips() -> None:
    grey = colorize(np.array([[-1.0, 0.0, 5.0, 10.0, 20.0]]), cmap="gray", value_range=(0.0, 10.0))
    np.testing.assert_array_equal(grey[0, :, 0], [0, 0, 128, 255, 255])
    with pytest.raises(UsageError, match="value range"):
        colorize(_ramp(), value_range=(1.0, 1.0))


def test_colorize_unknown_cmap_lists_valid_ones() -> None:
    with pytest.raises(UsageError, match="unknown colour map 'nope'.*inferno"):
        colorize(_ramp(), cmap="nope")


def test_available_cmaps() -> None:
    names = available_cmaps()
    assert {"inferno", "magma", "viridis", "gray"} <= set(names)
    assert names == sorted(names)


# --- file formats ----------------------------------------------------------------------


def test_png16_round_trip_is_within_one_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    disparity = rng.uniform(-3.5, 12.25, (37, 53)).astype(np.float32)
    path = tmp_path / "d16.png"

    write_png16(path, disparity, "disparity")

    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
        levels = np.asarray(image)
        assert levels.min() == 0 and levels.max() == 65535
        assert float(image.text[PNG16_MIN_KEY]) == pytest.approx(disparity.min())
        assert float(image.text[PNG16_MAX_KEY]) == pytest.approx(disparity.max())
        assert image.text["anydepth_kind"] == "disparity"
    back = read_png16(path)
    assert back.shape == disparity.shape and back.dtype == np.float32
    span = float(disparity.max() - disparity.min())
    assert np.abs(back - disparity).max() <= span / 65535


def test_near_is_bright_for_both_kinds() -> None:
    depth = 1.0 + _ramp()
    disparity = 1.0 / depth
    for values, kind in ((depth, "depth"), (disparity, "disparity")):
        grey = colorize(values, "gray", near_is_dark(kind))[0, :, 0].astype(float)
        assert np.corrcoef(grey, depth[0])[0, 1] < -0.9, kind
        flipped = colorize(values, "gray", near_is_dark(kind, invert=True))[0, :, 0].astype(float)
        assert np.corrcoef(flipped, depth[0])[0, 1] > 0.9, kind


def test_png16_constant_and_non_finite_maps(tmp_path: Path) -> None:
    write_png16(tmp_path / "c.png", np.full((3, 4), 2.5), "depth")
    np.testing.assert_array_equal(read_png16(tmp_path / "c.png"), np.full((3, 4), 2.5))

    disparity = np.array([[1.0, np.nan], [3.0, 5.0]])
    write_png16(tmp_path / "n.png", disparity, "disparity")
    back = read_png16(tmp_path / "n.png")
    np.testing.assert_allclose(back, [[1.0, 1.0], [3.0, 5.0]], atol=1e-4)


def test_read_png16_rejects_other_pngs(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((2, 2), dtype=np.uint16)).save(tmp_path / "plain16.png")
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    for name in ("plain16.png", "rgb.png"):
        with pytest.raises(InputError, match="not a 16-bit depth PNG"):
            read_png16(tmp_path / name)
    with pytest.raises(InputError):
        read_png16(tmp_path / "missing.png")


def test_write_npy_is_float32(tmp_path: Path) -> None:
    disparity = np.linspace(0, 1, 12).reshape(3, 4)
    write_npy(tmp_path / "sub" / "d.npy", disparity)
    back = np.load(tmp_path / "sub" / "d.npy")
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, disparity, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["d.npy"]


def test_write_color_png_round_trips(tmp_path: Path) -> None:
    rgb = colorize(_ramp())
    write_color_png(tmp_path / "c.png", rgb)
    with Image.open(tmp_path / "c.png") as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), rgb)
    with pytest.raises(ValueError):
        write_color_png(tmp_path / "bad.png", _ramp())


def test_writers_report_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError):
        write_png16(tmp_path / "file" / "d.png", _ramp(), "depth")


def test_side_by_side() -> None:
    rgb = np.zeros((6, 4, 3), dtype=np.uint8)
    color = np.full((6, 5, 3), 255, dtype=np.uint8)
    both = side_by_side(rgb, color)
    assert both.shape == (6, 9, 3)
    assert not both[:, :4].any() and (both[:, 4:] == 255).all()
    with pytest.raises(ValueError, match="heights differ"):
        side_by_side(rgb, color[:5])


# --- OpenEXR -----------------------------------------------------------------------------


def _exr_map() -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.standard_normal((13, 21)) * 1e3).astype(np.float32)  # odd sizes, negatives, a wide range


def test_exr_is_single_channel_float32_and_exact_in_openexr(tmp_path: Path) -> None:
    import OpenEXR

    values = _exr_map()
    values[0, :3] = [np.nan, np.inf, -np.inf]
    write_exr(tmp_path / "photo_depth.exr", values, "depth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo_depth.exr"]
    with OpenEXR.File(str(tmp_path / "photo_depth.exr")) as image:
        names, kind = list(image.channels()), image.header()["anydepth_kind"]
        back = image.channels()["Y"].pixels.copy()
    assert names == ["Y"] and kind == "depth" and back.dtype == np.float32
    np.testing.assert_array_equal(back, values)  # NaN and infinities where they were


def test_exr_reads_back_exactly_in_ffmpegs_own_exr_decoder(tmp_path: Path) -> None:
    import av  # FFmpeg's EXR decoder shares no code with the OpenEXR library that writes

    values = _exr_map()
    write_exr(tmp_path / "clip_disparity.000001.exr", values, "disparity")
    with av.open(str(tmp_path / "clip_disparity.000001.exr")) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name.startswith("grayf32")
    np.testing.assert_array_equal(frame.to_ndarray(), values)


def _opencv_has_openexr() -> bool:
    import cv2

    return any(line.split(":")[-1].strip() not in ("NO", "") for line in cv2.getBuildInformation().splitlines()
               if line.strip().startswith("OpenEXR:"))


@pytest.mark.skipif(not _opencv_has_openexr(), reason="this OpenCV build has no OpenEXR (OpenCV 5's wheels)")
def test_exr_reads_back_in_opencv_when_it_has_openexr(tmp_path: Path) -> None:
    values = _exr_map()
    write_exr(tmp_path / "photo_depth.exr", values, "depth")
    np.save(tmp_path / "values.npy", values)
    code = ("import cv2, numpy as np, sys; a = cv2.imread(sys.argv[1], cv2.IMREAD_UNCHANGED); "
            "assert a.dtype == np.float32 and a.ndim == 2, a; assert (a == np.load(sys.argv[2])).all(); print('ok')")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "photo_depth.exr"),
                             str(tmp_path / "values.npy")], capture_output=True, text=True,
                            env={**os.environ, "OPENCV_IO_ENABLE_OPENEXR": "1"})
    assert result.stdout.strip() == "ok", result.stderr


# --- temp files left by killed runs ------------------------------------------------------


def _plant_debris(folder: Path) -> tuple[list[Path], list[Path]]:
    """Temp files and folders of the kinds our writers make, and hidden or final files that are not ours."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = [temp_beside(folder / "photo_depth.png"), temp_beside(folder / "clip_depth.mp4"),
            temp_beside(folder / "clip_depth.spool"), temp_beside(folder / "clip_depth16")]
    for path in ours[:3]:
        path.write_bytes(b"half")
    ours[3].mkdir()
    (ours[3] / "clip_depth16.000001.png").write_bytes(b"half")
    theirs = [folder / ".keep", folder / ".notes.tmp-12345678x.txt", folder / "a.tmp-0123abcd.png",
              folder / "photo_depth.png", folder / "clip_depth.partial.mp4"]
    for path in theirs:
        path.write_bytes(b"x")
    assert all(is_temp_name(path.name) for path in ours) and not any(is_temp_name(path.name) for path in theirs)
    return ours, theirs


def test_claim_removes_only_our_temp_files_in_the_given_folders(tmp_path: Path) -> None:
    ours, theirs = _plant_debris(tmp_path / "out")
    elsewhere, _ = _plant_debris(tmp_path / "out" / "other")
    with claim_output_dir(tmp_path / "out", [tmp_path / "out", tmp_path / "out" / "missing"]) as removed:
        assert removed == 4
    assert not any(path.exists() for path in ours)
    assert all(path.exists() for path in theirs + elsewhere)


def test_claim_leaves_temp_files_alone_while_another_run_holds_the_folder(tmp_path: Path) -> None:
    ours, _ = _plant_debris(tmp_path)
    other = os.open(tmp_path, os.O_RDONLY)  # another run, holding its shared lock while it writes
    try:
        fcntl.flock(other, fcntl.LOCK_SH)
        with claim_output_dir(tmp_path, [tmp_path]) as removed:
            assert removed is None
            with claim_output_dir(tmp_path, [tmp_path]) as also:  # a third run at the same time
                assert also is None
    finally:
        os.close(other)
    assert all(path.exists() for path in ours)
    with claim_output_dir(tmp_path, [tmp_path]) as removed:
        assert removed == 4
