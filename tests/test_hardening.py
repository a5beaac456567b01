"""No single input can take the machine down: bounded network inputs, the memory guard, a fuzz
folder of odd files, and kill -9 in the middle of folder and video runs.

Every child process runs under an address-space limit (`run_limited`), so a bug fails a test
instead of exhausting the machine, and its peak resident memory is read from `wait4`.
"""

from __future__ import annotations

import io
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anydepth_cli.errors import InputError
from anydepth_cli.inference.predictor import DepthPredictor
from anydepth_cli.inference.preprocess import capped_network_size, network_size, token_cap
from anydepth_cli.inference.tiling import should_tile
from anydepth_cli.io.images import read_image
from anydepth_cli.io.video import probe_video
from anydepth_cli.io.writers import is_temp_name
from anydepth_cli.weights.checkpoint import load_network
from anydepth_cli.models.config import NetworkConfig
from conftest import TINY, cli_env, save_photo, tiny_model_args
from fixtures_dir import fixtures_dir
from test_video import make_clip

GB = 1 << 30
CHILD_LIMIT = 6 * GB
"""Address-space limit of every child process."""

EXTREME_SIZES = [(1, 3000), (64, 20000), (30000, 300)]
FAST = ["--input-size", "140", *tiny_model_args()]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int
    """Peak resident memory of the child, in bytes."""


def run_limited(args: list[str], limit: int = CHILD_LIMIT, timeout: float = 240,
                kill_after: float | None = None, env: dict[str, str] | None = None) -> Finished:
    """Run `args` under RLIMIT_AS = `limit`; SIGKILL it after `kill_after` seconds if given."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env or cli_env(),
                                preexec_fn=limit_memory)
        deadline = time.monotonic() + (kill_after if kill_after is not None else timeout)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                if kill_after is None:
                    pytest.fail(f"{args} ran past {timeout} s")
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = Finished(proc.returncode, out.read(), err.read(), usage.ru_maxrss * 1024)
    return result


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "anydepth_cli", *map(str, args)]


def tiny_predictor(input_size: int = 518, batch_size: int = 4) -> DepthPredictor:
    path = fixtures_dir() / f"{TINY}.json"
    return DepthPredictor(load_network(NetworkConfig.from_file(path), path.with_suffix(".pth")), input_size,
                          batch_size=batch_size)


# ---------------------------------------------------------------- the cap

@pytest.mark.parametrize("multiple,input_size", [(14, 518), (16, 512), (14, 140)])
def test_normal_photos_keep_the_reference_size_and_nothing_exceeds_the_cap(multiple, input_size):
    rng = np.random.default_rng(0)
    cap = token_cap(input_size, multiple)
    assert token_cap(518, 14) == 4 * 37 * 37 and token_cap(512, 16) == 4 * 32 * 32
    sizes = [(int(h), int(w)) for h, w in rng.integers(1, 9000, (2000, 2))]
    sizes += [(1, 1), (1, 3000), (3000, 1), (64, 20000), (30000, 300), (1, 10**6), (480, 640), (518, 2072)]
    for height, width in sizes:
        size = capped_network_size(height, width, input_size, multiple)
        tokens = (size[0] // multiple) * (size[1] // multiple)
        assert size[0] % multiple == 0 and size[1] % multiple == 0 and min(size) >= multiple
        assert tokens <= cap, (height, width, size)
        if max(height, width) <= 4 * min(height, width):  # up to 4:1: the reference preprocessing
            assert size == network_size(height, width, input_size, multiple)
        if tokens < cap // 2:  # a capped input uses most of the cap and keeps the aspect ratio
            assert size == network_size(height, width, input_size, multiple)


def test_auto_tiling_takes_long_images_a_capped_pass_would_shrink():
    assert not should_tile(1, 3000, 518) and not should_tile(64, 20000, 518)
    assert should_tile(30000, 300, 518)  # one capped pass would see it at a third of its resolution


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys, json
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from test_hardening import tiny_predictor
    predictor = tiny_predictor()
    height, width = int(sys.argv[1]), int(sys.argv[2])
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    values = predictor.predict_batch([image])[0]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"shape": list(values.shape), "finite": bool(np.isfinite(values).all()),
                      "input": list(predictor.network_input(height, width)), "loaded": before * 1024,
                      "peak": after * 1024}))
""")


@pytest.mark.slow
def test_extreme_aspect_images_give_full_size_maps_in_about_a_photos_memory():
    import json

    def measure(height: int, width: int) -> dict:
        result = run_limited([sys.executable, "-c", PEAK_SCRIPT, str(height), str(width),
                              str(Path(__file__).parent)], limit=4 * GB, timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[-1])

    photo = measure(480, 640)
    panorama = measure(518, 2072)  # 4:1, the largest input the reference preprocessing gives
    print(f"\n480x640 photo: peak {photo['peak'] / GB:.2f} GB; 518x2072 panorama: {panorama['peak'] / GB:.2f} GB")
    for height, width in EXTREME_SIZES:
        found = measure(height, width)
        print(f"{height}x{width}: network input {found['input']}, peak {found['peak'] / GB:.2f} GB")
        assert found["shape"] == [height, width] and found["finite"]
        assert found["peak"] <= 1.3 * panorama["peak"]


# ---------------------------------------------------------------- the memory guard

class _Network(torch.nn.Module):
    """The tiny network, raising the CPU allocator's error on batches of more than `max_batch`
    images or inputs wider than `max_width`."""

    def __init__(self, inner: torch.nn.Module, max_batch: int, max_width: int) -> None:
        super().__init__()
        self.inner, self.config, self.max_batch, self.max_width = inner, inner.config, max_batch, max_width
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.max_batch or x.shape[-1] > self.max_width:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: not enough memory: "
                               "you tried to allocate 123 bytes.")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_fails_only_an_image_that_cannot_fit_alone(monkeypatch, tmp_path):
    from anydepth_cli.io.images import InputItem
    from anydepth_cli.pipelines.photos import OutputOptions, TilingOptions, run_images
    from anydepth_cli.inference.tiling import default_tile_config

    predictor = tiny_predictor(input_size=140, batch_size=8)
    network = predictor.network = _Network(predictor.network, max_batch=3, max_width=1000)
    images = [np.full((48, 64, 3), i * 20, dtype=np.uint8) for i in range(8)]
    maps = predictor.predict_batch(images)
    assert [m.shape for m in maps] == [(48, 64)] * 8
    assert network.batches == [8, 4, 2, 2, 2, 2]  # halved until it fits, and the smaller batch is kept
    network.batches.clear()
    with pytest.raises(InputError, match="out of memory"):
        predictor.predict_batch([np.zeros((10, 300, 3), np.uint8)])  # a 1526-wide input: cannot fit alone

    for i in range(5):
        save_photo(tmp_path / "in" / f"p{i}.png", 64 if i != 2 else 400, 48 if i != 2 else 20, seed=i)
    items = [InputItem(p, Path(p.name)) for p in sorted((tmp_path / "in").iterdir())]

    class Quiet:
        def image_done(self, item, error): ...
        def tiles(self, item, done, total): ...

    outputs = OutputOptions(tmp_path / "out", "gray")
    summary = run_images(items, predictor, outputs, TilingOptions("off", default_tile_config(140)), Quiet(), None,
                         batch_size=4)
    assert summary.written == 4 and [(p.name, "out of memory" in why) for p, why in summary.failed] == [("p2.png", True)]


def test_an_estimate_beyond_the_free_memory_refuses_the_image_before_the_network_runs(monkeypatch):
    import anydepth_cli.inference.predictor as module

    predictor = tiny_predictor(input_size=140, batch_size=4)
    one = predictor.memory_needed(predictor.network_input(48, 64), 48 * 64)
    network = predictor.network = _Network(predictor.network, max_batch=99, max_width=10**6)
    monkeypatch.setattr(module, "available_memory", lambda device: int(2.5 * one / module.MEMORY_SHARE))
    predictor.predict_batch([np.zeros((48, 64, 3), np.uint8)] * 5)
    assert network.batches == [2, 2, 1]
    monkeypatch.setattr(module, "available_memory", lambda device: one // 2)
    with pytest.raises(InputError, match=r"^not enough memory: a 182x140 network input needs about \d+ MB, \d+ MB is free$"):
        predictor.predict_batch([np.zeros((48, 64, 3), np.uint8)])
    assert network.batches == [2, 2, 1]


def test_available_memory_sees_the_address_space_limit():
    script = ("import resource, torch; from anydepth_cli.inference.memory import available_memory;"
              f"resource.setrlimit(resource.RLIMIT_AS, ({3 * GB}, {3 * GB}));"
              "print(available_memory(torch.device('cpu')))")
    result = run_limited([sys.executable, "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr
    assert 0 < int(result.stdout) < 3 * GB


# ---------------------------------------------------------------- the fuzz folder

MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16B", "F", "LA", "PA",
         "RGBX", "RGBa", "La"]
FORMATS = {"png": "PNG", "tif": "TIFF", "webp": "WEBP", "bmp": "BMP", "jpg": "JPEG", "gif": "GIF"}


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((width, height), Image.BILINEAR)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def build_fuzz_folder(folder: Path) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Write the fuzz inputs; returns the names by kind, the names that must fail and those that
    must be written (the rest are byte flips and cuts, which may or may not decode)."""
    folder.mkdir(parents=True)
    kinds: dict[str, list[str]] = {}
    must_fail: list[str] = []
    must_write: list[str] = []
    rng = random.Random(14)

    def add(kind: str, name: str, data: bytes | None = None) -> Path:
        kinds.setdefault(kind, []).append(name)
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        return path

    bases = {ext: _encoded(_photo(72, 56, i), fmt) for i, (ext, fmt) in enumerate(FORMATS.items()) if ext != "bmp"}
    for ext, data in bases.items():
        for i, cut in enumerate([0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 0.98]):
            add("truncated", f"cut{i}-{ext}.{ext}", data[: max(1, int(len(data) * cut))])
        must_fail.append(f"cut0-{ext}.{ext}")
        for seed in range(10):
            flipped = bytearray(data)
            for _ in range(1 + seed * 2):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            add("byte flips", f"flip{seed}-{ext}.{ext}", bytes(flipped))

    for height, width in [*EXTREME_SIZES, (3000, 1), (1, 1), (1, 2), (2, 1), (13, 13), (14, 14), (5, 4000)]:
        name = f"size-{height}x{width}.png"
        add("extreme sizes", name, _encoded(_photo(width, height, height + width), "PNG"))
        must_write.append(name)
    add("extreme sizes", "bomb-60000x60000.png", _png_header_only(60000, 60000))
    must_fail.append("bomb-60000x60000.png")

    base = _photo(40, 30, 7)
    for number, mode in enumerate(MODES):
        image = base.convert(mode)
        if mode == "F":
            values = np.asarray(image).copy()
            values[0, :3] = [np.nan, np.inf, -np.inf]
            image = Image.fromarray(values, "F")
        stem = mode.replace(";", "_")
        for ext, fmt in FORMATS.items():
            try:
                data = _encoded(image, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            name = f"mode{number:02d}-{stem}-{ext}.{ext}"  # numbered: LA and La differ only in case
            add("PIL modes", name, data)
            must_write.append(name)

    for orientation in [0, 9, 10, 255, 65535, -1, 3, 6, 8]:
        exif = Image.Exif()
        exif[0x0112] = orientation
        try:
            data = _encoded(_photo(60, 40, 3), "JPEG", exif=exif.tobytes())
        except (struct.error, OverflowError, ValueError):
            continue
        name = f"exif-orientation-{orientation}.jpg"
        add("EXIF orientation", name, data)
        must_write.append(name)
    junk = _encoded(_photo(60, 40, 4), "JPEG", exif=b"Exif\0\0" + bytes(rng.randrange(256) for _ in range(80)))
    add("EXIF orientation", "exif-garbage-block.jpg", junk)

    for ext in ("jpg", "png", "tif", "webp"):
        add("zero bytes", f"empty-{ext}.{ext}", b"")
        must_fail.append(f"empty-{ext}.{ext}")
    for name, data in [("text.png", b"hello, world\n" * 20), ("html.jpg", b"<html><body>404</body></html>"),
                       ("random.tif", bytes(rng.randrange(256) for _ in range(5000)))]:
        add("not images", name, data)
        must_fail.append(name)

    for name in ("folder.jpg", "nested.png"):
        add("directories", name).mkdir()
    (folder / "nested.png" / "inner.png").write_bytes(_encoded(_photo(30, 20, 9), "PNG"))
    kinds["directories"].append("nested.png/inner.png")
    must_write.append("nested.png/inner.png")

    (folder / ".link-target.png").write_bytes(_encoded(_photo(33, 21, 5), "PNG"))  # hidden: found via the link only
    links = {"link-good.png": ".link-target.png", "link-dangling.png": "does-not-exist.png", "link-loop.png": "link-loop.png",
             "link-dir.jpg": "folder.jpg", "link-devzero.png": "/dev/zero"}
    for name, target in links.items():
        os.symlink(target, add("symlinks", name))
    must_write.append("link-good.png")
    must_fail += ["link-dangling.png", "link-loop.png", "link-devzero.png"]
    os.mkfifo(add("special files", "fifo.png"))
    must_fail.append("fifo.png")
    if os.geteuid() != 0:  # root reads a chmod 000 file, so this case only means something for other users
        path = add("unreadable", "unreadable.png", bases["png"])
        path.chmod(0)
        must_fail.append("unreadable.png")
    return kinds, must_fail, must_write


def _final_outputs_are_whole(out: Path) -> None:
    """Every file under a final name decodes fully at a consistent size; temp files are hidden."""
    for path in out.rglob("*"):
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix == ".npy":
            values = np.load(path)
            assert values.dtype == np.float32 and values.ndim == 2
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".mp4":
            assert path.name.endswith(".partial.mp4") or probe_video(path).frame_count > 0
        elif path.suffix == ".npz":
            with np.load(path) as archive:
                assert archive[archive.files[0]].shape[0] == archive["frame_index"].shape[0]


@pytest.mark.slow
def test_fuzz_folder_never_crashes_and_writes_every_good_file_at_its_size(tmp_path):
    inputs, out = tmp_path / "fuzz", tmp_path / "out"
    kinds, must_fail, must_write = build_fuzz_folder(inputs)
    names = [name for group in kinds.values() for name in group]
    assert len(names) >= 200

    # A small input and no tiling keep the run short; the cap at the default input size is
    # measured in test_extreme_aspect_images_give_full_size_maps_in_about_a_photos_memory.
    result = run_limited(cli("predict", inputs, "-o", out, "--raw", "npy", "--tile", "off", *FAST),
                         limit=CHILD_LIMIT, timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode in (0, 1), text
    assert "Traceback" not in text and "Error:" not in text.replace("InputError", "")

    written = failed = 0
    for name in names:
        path = inputs / name
        expected = out / Path(name).parent / f"{Path(name).stem}_depth.png"
        try:
            good = path.is_file() and read_image(path, 120_000_000)
        except InputError:
            good = None
        if path.is_dir():
            continue  # folders are walked (links to them are not), never read as images
        if good is None or good is False:
            assert name not in must_write, name
            assert not expected.exists(), name
            assert Path(name).name in text, f"{name} is not named in the output"
            failed += 1
        else:
            assert name not in must_fail, name
            with Image.open(expected) as picture:
                picture.load()
                assert picture.size == (good.shape[1], good.shape[0]), name
            raw = np.load(expected.with_name(f"{Path(name).stem}_depth.npy"))
            assert raw.shape == good.shape[:2] and np.isfinite(raw).all(), name
            written += 1
    assert not [p for p in out.rglob(".*")], "temp files left behind"
    _final_outputs_are_whole(out)
    counts = ", ".join(f"{kind} {len(group)}" for kind, group in kinds.items())
    print(f"\nfuzz: {len(names)} inputs ({counts}); written {written}, failed {failed}; "
          f"peak RSS {result.peak_rss / GB:.2f} GB")
    assert written >= 60 and failed >= 40
    assert result.peak_rss < 3 * GB


# ---------------------------------------------------------------- kill -9

@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_during_a_folder_run_leaves_no_partial_file_and_skip_existing_finishes(tmp_path, seed):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(10):
        save_photo(inputs / f"sub{i % 2}" / f"photo{i}.jpg", 900, 700, seed=i)
    args = cli("predict", inputs, "-o", out, "--raw", "npy", "--side-by-side", *FAST)
    killed = run_limited(args, kill_after=random.Random(seed).uniform(2.0, 7.0))
    assert killed.returncode in (-signal.SIGKILL, 0)
    _final_outputs_are_whole(out)
    finished = run_limited(args + ["--skip-existing"])
    assert finished.returncode == 0, finished.stderr
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                     and not p.name.startswith("."))
    assert len(outputs) == 30
    _final_outputs_are_whole(out)
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]  # the rerun removed what the killed run left


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_during_a_video_run_leaves_final_names_only_for_whole_outputs(tmp_path, seed):
    clip, out = tmp_path / "clip.mp4", tmp_path / "out"
    make_clip(clip, frames=48, size=(160, 96), fps=12.0)
    args = cli("predict", clip, "-o", out, "--raw", "npz", "--side-by-side", *FAST)
    killed = run_limited(args, kill_after=random.Random(seed).uniform(2.5, 6.0))
    for name in ("clip_depth.mp4", "clip_side.mp4"):
        if (out / name).exists():
            assert probe_video(out / name).frame_count == 48
    if (out / "clip_depth.npz").exists():
        assert np.load(out / "clip_depth.npz")["depth"].shape[0] == 48
    assert all(p.name.startswith(".") or p.name.endswith(".partial.mp4") or p.name in
               ("clip_depth.mp4", "clip_side.mp4", "clip_depth.npz") for p in out.glob("*")), killed.stderr
    finished = run_limited(args)
    assert finished.returncode == 0, finished.stderr
    assert probe_video(out / "clip_depth.mp4").frame_count == 48
    assert probe_video(out / "clip_side.mp4").frame_count == 48
    assert np.load(out / "clip_depth.npz")["depth"].shape == (48, 96, 160)
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]


@pytest.mark.slow
def test_a_rerun_removes_the_temp_files_a_killed_run_left(tmp_path):
    clip, out = tmp_path / "in" / "clip.mp4", tmp_path / "out"
    clip.parent.mkdir()
    make_clip(clip, frames=24, size=(128, 80), fps=12.0)
    args = cli("predict", clip.parent, "-o", out, "--raw", "exr", "--side-by-side", "--input-size", "70",
               *tiny_model_args())
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=cli_env())

    def temps() -> list[str]:
        # A frame half-written inside the temp EXR folder is part of that folder, which the rerun removes whole.
        return sorted(p.name for p in out.rglob("*") if is_temp_name(p.name) and not is_temp_name(p.parent.name)) \
            if out.exists() else []

    deadline = time.monotonic() + 120
    while len(temps()) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # mid-clip: the depth video, the side video and the EXR folder are all being written
    proc.wait()
    left = temps()
    assert len(left) == 3, left
    finished = run_limited(args)
    assert finished.returncode == 0, finished.stderr
    assert "cleaned 3 temporary file(s)" in " ".join(finished.stderr.split())
    assert temps() == []
    assert probe_video(out / "clip_depth.mp4").frame_count == 24 and len(list((out / "clip_depth").iterdir())) == 24
