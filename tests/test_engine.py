"""The streaming engine: order, batching, bounded memory, failures, overlap, cancelling, and the outputs of the paths
that run through it."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anydepth_cli.errors import InputError
from anydepth_cli.inference.engine import Engine, Full, Loaded, Prediction
from conftest import cli_env, tiny_model_args
from fixtures_dir import fixtures_dir

VARYING = "tiny_dinov3_sdt"
"""A fixture network whose maps vary on photos."""


@pytest.fixture(scope="module")
def tiny_sdt_predictor():
    from anydepth_cli.pipelines.runtime import open_predictor

    folder = fixtures_dir()
    predictor, _ = open_predictor(None, str(folder / f"{VARYING}.pth"), folder / f"{VARYING}.json", "cpu", "fp32",
                                  batch_size=4, input_size=32)
    return predictor


class Recorder:
    """A predictor whose map is the image's red channel plus one, recording every call's batch."""

    output_kind = "depth"
    input_size = 16

    def __init__(self, delay: float = 0.0, too_big: int | None = None) -> None:
        self.delay = delay
        self.too_big = too_big
        self.calls: list[list[int]] = []
        self.lock = threading.Lock()

    def predict_batch(self, images, sizes=None):
        with self.lock:
            self.calls.append([_number(image) for image in images])
        time.sleep(self.delay)
        if self.too_big is not None and any(_number(image) == self.too_big for image in images):
            raise InputError("not enough memory")
        sizes = sizes or [image.shape[:2] for image in images]
        return [np.full(size, image[0, 0, 0] + 1.0, np.float32) for image, size in zip(images, sizes)]


def _image(number: int, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    image[..., 0] = number % 200
    image[..., 1] = number % 256
    image[..., 2] = number // 256
    return image


def _number(image: np.ndarray) -> int:
    return int(image[0, 0, 1]) + 256 * int(image[0, 0, 2])


def _load(number: int) -> Loaded:
    if number == 13:
        raise InputError("unlucky file")
    return Loaded(_image(number))


def _finish(number: int, loaded: Loaded, prediction: Prediction) -> tuple[int, float]:
    return number, float(prediction.values[0, 0])


def test_outcomes_come_in_input_order_with_each_failure_named_and_the_rest_going_on():
    predictor = Recorder(too_big=21)
    outcomes = list(Engine(predictor, batch_size=4).stream(range(40), _load, _finish))
    assert [outcome.job for outcome in outcomes] == list(range(40))
    failed = {outcome.job: str(outcome.error) for outcome in outcomes if outcome.error is not None}
    assert failed == {13: "unlucky file", 21: "not enough memory"}
    for outcome in outcomes:
        if outcome.error is None:
            assert outcome.result == (outcome.job, outcome.job % 200 + 1.0)
    # full batches of 4, the unreadable photo left out; the batch holding the photo too big for memory is rerun one
    # photo at a time, so only that photo fails
    assert predictor.calls[:4] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 14, 15, 16]]
    assert predictor.calls[4:11] == [[17, 18, 19, 20], [21, 22, 23, 24], [21], [22], [23], [24], [25, 26, 27, 28]]
    assert all(len(call) <= 4 for call in predictor.calls)


def test_memory_stays_bounded_whatever_the_number_of_inputs():
    loaded_now, most = [0], [0]
    lock = threading.Lock()

    def load(number: int) -> Loaded:
        with lock:
            loaded_now[0] += 1
            most[0] = max(most[0], loaded_now[0])
        return Loaded(_image(number))

    def finish(number: int, loaded: Loaded, prediction: Prediction) -> int:
        time.sleep(0.002)  # a slow disk
        with lock:
            loaded_now[0] -= 1
        return number

    engine = Engine(Recorder(), batch_size=2, capacity=6)
    assert [outcome.result for outcome in engine.stream(range(300), load, finish)] == list(range(300))
    assert most[0] <= 6


def test_large_images_hold_fewer_in_flight():
    engine = Engine(Recorder(), batch_size=4, pixel_budget=3 * 64 * 64)
    most = [0]

    def load(number: int) -> Loaded:
        most[0] = max(most[0], engine.in_flight)
        return Loaded(_image(number, (64, 64)))

    list(engine.stream(range(30), load, _finish))
    assert most[0] <= 3


def test_reading_the_network_and_writing_overlap():
    """Each stage waits for the next photo to have reached the stage before it: run one after the other, the waits
    would time out."""
    read, predicted = [threading.Event() for _ in range(3)], [threading.Event() for _ in range(3)]
    overlapped = []

    def load(number: int) -> Loaded:
        read[number].set()
        return Loaded(_image(number))

    class Waiting(Recorder):
        def predict_batch(self, images, sizes=None):
            number = _number(images[0])
            predicted[number].set()
            if number < 2:
                overlapped.append(read[number + 1].wait(10))
            return super().predict_batch(images, sizes)

    def finish(number: int, loaded: Loaded, prediction: Prediction) -> int:
        if number < 2:
            overlapped.append(predicted[number + 1].wait(10))
        return number

    assert [o.result for o in Engine(Waiting(), batch_size=1).stream(range(3), load, finish)] == [0, 1, 2]
    assert overlapped == [True] * 4


def test_dynamic_batching_gathers_what_arrives_within_the_wait_and_no_more():
    predictor = Recorder()
    with Engine(predictor, batch_size=8, max_wait=0.2) as engine:
        futures = [engine.submit(n, _load, _finish) for n in range(3)]
        assert [f.result(5) for f in futures] == [(n, n + 1.0) for n in range(3)]
        time.sleep(0.3)
        late = engine.submit(3, _load, _finish)
        assert late.result(5) == (3, 4.0)
    assert predictor.calls == [[0, 1, 2], [3]]


def test_a_full_engine_refuses_instead_of_queueing():
    predictor = Recorder(delay=0.3)
    with Engine(predictor, batch_size=1, capacity=2, max_wait=0.0) as engine:
        first = [engine.submit(n, _load, _finish, block=False) for n in range(2)]
        with pytest.raises(Full):
            engine.submit(2, _load, _finish, block=False)
        assert [f.result(5)[0] for f in first] == [0, 1]


@pytest.mark.parametrize("stage", ["load", "finish"])
def test_a_bug_is_raised_to_the_caller_not_swallowed(stage):
    def load(number: int) -> Loaded:
        if stage == "load" and number == 5:
            raise ZeroDivisionError("a bug")
        return Loaded(_image(number))

    def finish(number: int, loaded: Loaded, prediction: Prediction) -> int:
        if stage == "finish" and number == 5:
            raise ZeroDivisionError("a bug")
        return number

    with pytest.raises(ZeroDivisionError):
        list(Engine(Recorder(), batch_size=2).stream(range(20), load, finish))


def test_stopping_early_cancels_the_rest_and_leaves_no_thread():
    before = threading.active_count()
    loads = []

    def load(number: int) -> Loaded:
        loads.append(number)
        return Loaded(_image(number))

    stream = Engine(Recorder(delay=0.01), batch_size=2).stream(range(10_000), load, _finish)
    assert next(stream).job == 0
    stream.close()
    time.sleep(0.1)
    assert len(loads) < 100, "the inputs after the stop were not read"
    assert threading.active_count() <= before


# ------------------------------------------------------------------------------------------- the paths through it


def _photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        size = (48, 64) if index % 3 else (64, 40)  # two network sizes, interleaved
        image = (rng.random((*size, 3)) * 255).astype(np.uint8)
        path = folder / f"p{index:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def test_a_cpu_batch_holds_no_more_patch_tokens_than_the_cap(tiny_sdt_predictor, monkeypatch):
    """Large images run one at a time on the CPU (batching them only falls out of cache); small ones share batches."""
    from anydepth_cli.inference import predictor as module

    predictor = tiny_sdt_predictor
    calls: list[int] = []
    run = predictor.run
    monkeypatch.setattr(predictor, "run", lambda batch: calls.append(len(batch)) or run(batch))
    image = np.zeros((48, 64, 3), np.uint8)
    height, width = predictor.network_input(48, 64)
    tokens = (height // predictor.patch_size) * (width // predictor.patch_size)
    for cap, expected in ((tokens - 1, [1] * 4), (2 * tokens, [2, 2]), (100 * tokens, [4])):
        monkeypatch.setattr(module, "CPU_BATCH_TOKENS", cap)
        calls.clear()
        maps = predictor.predict_batch([image] * 4)
        assert calls == expected and len(maps) == 4 and all(m.shape == (48, 64) for m in maps)


def test_photo_outputs_are_byte_identical_to_predicting_and_writing_each_batch_in_turn(tmp_path, tiny_sdt_predictor):
    from anydepth_cli.inference.tiling import default_tile_config
    from anydepth_cli.io.images import InputItem, read_image
    from anydepth_cli.pipelines.photos import OutputOptions, TilingOptions, run_images, write_outputs

    paths = _photos(tmp_path / "in", 11)
    items = [InputItem(path, Path(path.name)) for path in paths]
    engine_out, direct_out = tmp_path / "engine", tmp_path / "direct"
    options = OutputOptions(engine_out, "inferno", raw="npy")

    class Quiet:
        def image_done(self, item, error):
            assert error is None

        def tiles(self, item, done, total):
            pass

    summary = run_images(items, tiny_sdt_predictor, options, TilingOptions("off", default_tile_config(32)), Quiet(),
                         None, batch_size=4)
    assert summary.written == 11 and not summary.failed
    direct = OutputOptions(direct_out, "inferno", raw="npy")
    for first in range(0, len(items), 4):
        batch = items[first:first + 4]
        images = [read_image(item.path, None) for item in batch]
        for item, image, values in zip(batch, images, tiny_sdt_predictor.predict_batch(images)):
            write_outputs(item, image, values, tiny_sdt_predictor.output_kind, None, direct)
    written = sorted(p.name for p in engine_out.iterdir())
    assert written == sorted(p.name for p in direct_out.iterdir()) and len(written) == 22
    for name in written:
        assert (engine_out / name).read_bytes() == (direct_out / name).read_bytes(), name
    maps = [np.load(engine_out / f"p{i:03d}_depth.npy") for i in range(3)]
    assert all(np.ptp(m) > 0 for m in maps), "the fixture's maps vary"


@pytest.mark.slow
def test_ctrl_c_keeps_what_is_finished_and_exits_130(tmp_path):
    paths = _photos(tmp_path / "in", 400, seed=1)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "anydepth_cli", "predict", str(tmp_path / "in"), "-o", str(out), "--input-size", "32",
         "--device", "cpu", "--raw", "npy", *tiny_model_args(VARYING)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*_depth.png"))) < 20:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    pictures = sorted(out.glob("*_depth.png"))
    assert 20 <= len(pictures) < len(paths), "interrupted part-way"
    for picture in pictures:  # every output under a final name is whole
        Image.open(picture).load()
        np.load(picture.with_name(picture.name.replace("_depth.png", "_depth.npy")))
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file left behind"
    assert "Traceback" not in stderr


# ------------------------------------------------------------------------------------------------- the GPU path


@pytest.mark.parametrize("family", ["dav2", "da3", "vggt"])
def test_resizing_on_the_device_equals_the_cpu_pipeline(family):
    """What a GPU runs (`prepare_on_device`), run here on the CPU, against the published pipelines' cv2 or Pillow
    resizing: to float rounding for Depth Anything V2's float pipeline, within one 8-bit level for the 8-bit ones
    (Depth Anything 3's cv2, VGGT's Pillow)."""
    import cv2
    import torch

    from anydepth_cli.inference.preprocess import RESIZINGS, STD, prepare_batch, prepare_on_device

    resizing = RESIZINGS[family](518 if family == "dav2" else 504, 14)
    rng = np.random.default_rng(3)
    for size in [(480, 640), (97, 301), (1003, 757), (1200, 1600)]:
        image = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.uint8), (5, 5), 2)
        cpu = prepare_batch([image], resizing)
        device = prepare_on_device([image], resizing, torch.device("cpu"))
        assert cpu.shape == device.shape
        in_levels = ((cpu - device).abs() * torch.tensor(STD)[:, None, None]).amax().item() * 255
        assert in_levels <= (1e-2 if family == "dav2" else 1.0 + 1e-3), (size, in_levels)
        assert cpu.std() > 0.1


def test_graph_buckets_pad_batches_to_powers_of_two_within_the_largest():
    from anydepth_cli.inference.graphs import bucket_batch

    assert [bucket_batch(n, 8) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert bucket_batch(3, 3) == 3 and bucket_batch(5, 4) == 5


def test_the_colour_picture_made_on_the_device_equals_the_cpu_one():
    import torch

    from anydepth_cli.io.writers import colorize, colorize_tensor

    rng = np.random.default_rng(5)
    for shape in [(480, 640), (97, 301), (1500, 2000)]:
        values = (rng.random(shape) ** 2 * 10).astype(np.float32)
        values[0, :5] = np.nan
        for invert in (False, True):
            expected = colorize(values, "inferno", invert)
            assert np.array_equal(colorize_tensor(torch.from_numpy(values), "inferno", invert).numpy(), expected)
            assert len(np.unique(expected.reshape(-1, 3), axis=0)) > 100
    constant = np.full((8, 8), 3.0, np.float32)
    assert np.array_equal(colorize_tensor(torch.from_numpy(constant)).numpy(), colorize(constant))


def test_work_on_the_device_reaches_finish_for_every_image_of_a_batch(tiny_sdt_predictor):
    """The engine's `on_device` (run only on CUDA; forced here) sees each map before it leaves the device, in the
    batch's own order, and its arrays reach `finish` with the map they were made from."""

    images = [_image(n, (48, 64) if n % 2 else (64, 48)) for n in range(6)]
    engine = Engine(tiny_sdt_predictor, batch_size=4)
    engine.on_device = lambda values: {"double": (values * 2).numpy(), "device": np.array(str(values.device))}

    def finish(number: int, loaded: Loaded, prediction: Prediction) -> None:
        assert np.array_equal(prediction.extras["double"], prediction.values * 2)
        assert prediction.values.shape == images[number].shape[:2]

    outcomes = list(engine.stream(range(6), lambda n: Loaded(images[n]), finish))
    assert all(outcome.error is None for outcome in outcomes)
