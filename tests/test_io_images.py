"""Tests for anydepth_cli.io.images: discovery, decoding of many image kinds (reading ahead is the engine's: tests/test_engine.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.io.images import (
    IMAGE_EXTENSIONS,
    InputItem,
    discover_inputs,
    read_image,
)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- discovery -------------------------------------------------------------------------


def test_image_extensions_cover_common_formats() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


def test_discover_walks_tree_sorted_mirrors_relative_paths_and_counts_skipped(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name in ["b.jpg", "a.png", "sub/c.PNG", "sub/deeper/d.tiff", "z/e.webp"]:
        _touch(root / name)
    for name in ["notes.txt", "sub/data.csv"]:
        _touch(root / name)
    for name in [".hidden.png", ".cache/f.png", "sub/.git/g.jpg"]:
        _touch(root / name)

    found = discover_inputs([root])

    assert [item.relative for item in found.items] == [
        Path("a.png"), Path("b.jpg"), Path("sub/c.PNG"), Path("sub/deeper/d.tiff"), Path("z/e.webp"),
    ]  # fmt: skip
    assert [item.path for item in found.items] == [root / item.relative for item in found.items]
    assert sorted(found.skipped) == [root / "notes.txt", root / "sub/data.csv"]


def test_discover_takes_a_file_as_given_even_with_unknown_suffix(tmp_path: Path) -> None:
    odd = _touch(tmp_path / "deep" / "scan.xyz")
    found = discover_inputs([odd])
    assert found.items == [InputItem(odd, Path("scan.xyz"))]
    assert found.skipped == []


def test_discover_missing_path_names_it(tmp_path: Path) -> None:
    _touch(tmp_path / "ok.png")
    missing = tmp_path / "nope.jpg"
    with pytest.raises(UsageError, match="nope.jpg"):
        discover_inputs([tmp_path / "ok.png", missing])


def test_discover_folder_without_images_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    _touch(folder / "a.txt")
    _touch(folder / "b.pdf.bak")
    _touch(folder / ".hidden.png")
    with pytest.raises(UsageError, match=r"no images in .*docs.*2 other file") as info:
        discover_inputs([folder])
    assert "\n" not in str(info.value)


def test_discover_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        discover_inputs([tmp_path / "empty"])


def test_discover_two_folders_are_prefixed_with_their_names(tmp_path: Path) -> None:
    _touch(tmp_path / "day" / "img.png")
    _touch(tmp_path / "night" / "img.png")
    found = discover_inputs([tmp_path / "day", tmp_path / "night"])
    assert [item.relative for item in found.items] == [Path("day/img.png"), Path("night/img.png")]


def test_discover_disambiguates_clashing_outputs(tmp_path: Path) -> None:
    # Same folder name twice, and photo.jpg/photo.png (same output stem) in one folder.
    _touch(tmp_path / "a" / "photos" / "x.png")
    _touch(tmp_path / "b" / "photos" / "x.png")
    _touch(tmp_path / "c" / "photo.jpg")
    _touch(tmp_path / "c" / "photo.png")
    _touch(tmp_path / "d" / "photo.png")

    found = discover_inputs([tmp_path / "a" / "photos", tmp_path / "b" / "photos"])
    relatives = [item.relative for item in found.items]
    assert relatives[0] == Path("photos/x.png")
    assert len({r.with_suffix("").as_posix().lower() for r in relatives}) == 2

    found = discover_inputs([tmp_path / "c"])
    assert [item.relative for item in found.items] == [Path("photo.jpg"), Path("photo-png.png")]

    found = discover_inputs([tmp_path / "c" / "photo.png", tmp_path / "d" / "photo.png"])
    assert [item.relative for item in found.items] == [Path("photo.png"), Path("photo-png.png")]


def test_discover_takes_videos_in_folders_when_asked_beside_photos(tmp_path: Path) -> None:
    _touch(tmp_path / "shoot" / "b.MOV")
    _touch(tmp_path / "shoot" / "a.jpg")
    _touch(tmp_path / "shoot" / "a.mp4")  # same output stem as a.jpg
    _touch(tmp_path / "shoot" / "day2" / "c.mkv")
    _touch(tmp_path / "shoot" / "notes.txt")
    assert [item.relative for item in discover_inputs([tmp_path / "shoot"]).items] == [Path("a.jpg")]
    found = discover_inputs([tmp_path / "shoot"], also=frozenset({".mp4", ".mov", ".mkv"}))
    assert [item.relative for item in found.items] == [Path("a.jpg"), Path("a-mp4.mp4"), Path("b.MOV"),
                                                        Path("day2/c.mkv")]
    assert found.skipped == [tmp_path / "shoot" / "notes.txt"]
    _touch(tmp_path / "docs" / "notes.txt")
    with pytest.raises(UsageError, match=r"no images or videos in .*docs \(1 other file.*\.mp4"):
        discover_inputs([tmp_path / "docs"], also=frozenset({".mp4"}))


def test_discover_same_file_twice_is_taken_once(tmp_path: Path) -> None:
    image = _touch(tmp_path / "f" / "a.png")
    found = discover_inputs([tmp_path / "f", image])
    assert [item.path for item in found.items] == [image]


# --- decoding --------------------------------------------------------------------------


def test_rgb_png_round_trips(tmp_path: Path) -> None:
    pixels = _noise(7, 5)
    out = read_image(_save(Image.fromarray(pixels), tmp_path / "rgb.png"), None)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, pixels)


def test_grey_becomes_three_equal_channels(tmp_path: Path) -> None:
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    out = read_image(_save(Image.fromarray(grey), tmp_path / "g.png"), None)
    assert out.shape == (6, 10, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


def test_la_is_composited_over_black(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (200, 255))
    image.putpixel((1, 0), (200, 128))
    out = read_image(_save(image, tmp_path / "la.png"), None)
    np.testing.assert_array_equal(out[0, 0], [200, 200, 200])
    np.testing.assert_array_equal(out[0, 1], [100, 100, 100])


def test_rgba_alpha_is_dropped_over_black(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (10, 20, 30, 255))
    image.putpixel((1, 0), (255, 255, 255, 0))
    image.putpixel((2, 0), (200, 100, 50, 51))
    out = read_image(_save(image, tmp_path / "rgba.png"), None)
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [0, 0, 0], [40, 20, 10]])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_is_scaled_to_full_8_bit_range(tmp_path: Path, suffix: str) -> None:
    ramp = np.linspace(0, 65535, 64 * 32).round().astype(np.uint16).reshape(32, 64)
    path = _save(Image.fromarray(ramp), tmp_path / f"deep{suffix}")
    with Image.open(path) as check:
        assert check.mode.startswith("I;16")
    out = read_image(path, None)
    grey = out[..., 0].ravel()
    assert grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey.astype(int)) >= 0)
    assert len(np.unique(grey)) == 256
    np.testing.assert_array_equal(out[..., 0], np.round(ramp / 257).astype(np.uint8))


def test_32_bit_integer_grey_is_read_as_16_bit(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 40).round().astype(np.int32).reshape(4, 10)
    path = _save(Image.fromarray(ramp), tmp_path / "int.tif")
    with Image.open(path) as check:
        assert check.mode == "I"
    grey = read_image(path, None)[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey.ravel().astype(int)) > 0)


def test_palette_image_uses_its_palette(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    out = read_image(_save(image, tmp_path / "p.png"), None)
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 0, 255]])


def test_palette_transparency_is_composited(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    out = read_image(_save(image, tmp_path / "pt.png", transparency=1), None)
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 0, 0]])


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    out = read_image(path, None)
    assert out.shape == (16, 16, 3)
    red, green, blue = (int(v) for v in out[8, 8])
    assert red > 200 and green < 60 and blue < 60


def test_one_bit_image(tmp_path: Path) -> None:
    image = Image.new("1", (2, 1))
    image.putpixel((1, 0), 1)
    out = read_image(_save(image, tmp_path / "bw.png"), None)
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [255, 255, 255]])


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((24, 40, 3), dtype=np.uint8)
    pixels[:8, :8] = [255, 0, 0]  # marked top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = _save(Image.fromarray(pixels), tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)

    out = read_image(path, None)

    assert out.shape == (40, 24, 3)
    assert out[:6, -6:, 0].min() > 200 and out[:6, -6:, 1:].max() < 60  # now top-right
    assert out[:6, :6].max() < 60 and out[-6:, -6:].max() < 60


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="^empty file$"):
        read_image(_touch(tmp_path / "zero.jpg", b""), None)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_is_detected(tmp_path: Path, suffix: str) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    full = _save(Image.fromarray(_noise(64, 64)), tmp_path / f"full{suffix}")
    data = full.read_bytes()
    cut = _touch(tmp_path / f"cut{suffix}", data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        read_image(cut, None)
    assert "\n" not in str(info.value)


def test_text_with_image_suffix_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="^not an image file$"):
        read_image(_touch(tmp_path / "notes.png", b"hello, this is text\n" * 10), None)


def test_too_many_pixels_is_checked_before_decoding(tmp_path: Path) -> None:
    full = _save(Image.fromarray(_noise(100, 120)), tmp_path / "big.png")
    data = full.read_bytes()
    # A truncated file: decoding would fail, so the size error proves the header check.
    cut = _touch(tmp_path / "cut.png", data[: len(data) // 2])
    with pytest.raises(InputError, match=r"120x100 = 12000 pixels.*--max-pixels 12000"):
        read_image(cut, 11999)
    assert read_image(full, 12000).shape == (100, 120, 3)


def test_decompression_bomb_maps_to_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = _save(Image.fromarray(_noise(50, 50)), tmp_path / "bomb.png")
    with pytest.raises(InputError, match=r"2500 pixels.*--max-pixels 2500"):
        read_image(path, None)
    # An explicit, larger --max-pixels lifts Pillow's own limit.
    assert read_image(path, 5000).shape == (50, 50, 3)


def test_image_pillow_refuses_is_reported_against_our_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --max-pixels 1200 lifts Pillow's limit to 1200, and Pillow itself refuses more than twice that
    # (2400) before our check runs: the message must still state our limit, not Pillow's.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = _save(Image.fromarray(_noise(50, 50)), tmp_path / "bomb.png")
    with pytest.raises(InputError) as caught:
        read_image(path, 1200)
    message = str(caught.value)
    assert "2500 pixels, more than --max-pixels 1200" in message and "2400" not in message
    assert "pass --max-pixels 2500" in message


def test_folder_is_unreadable_as_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read file"):
        read_image(tmp_path, None)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads 0o000 files")
def test_permission_denied(tmp_path: Path) -> None:
    path = _save(Image.fromarray(_noise(4, 4)), tmp_path / "locked.png")
    path.chmod(0)
    try:
        with pytest.raises(InputError, match="cannot read file: Permission denied"):
            read_image(path, None)
    finally:
        path.chmod(0o644)
