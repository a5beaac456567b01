"""Video I/O, stabilisation and the video pipeline, with synthetic clips and an oracle network."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from anydepth_cli.errors import InputError, OutputError, UsageError
from anydepth_cli.inference.align import Affine
from anydepth_cli.inference.stabilize import ClipColourRange, FrameStabilizer
from anydepth_cli.inference.tiling import default_tile_config
from anydepth_cli.io.encoders import open_video_writer, resolve_codec
from anydepth_cli.io.video import FRAME_NAME, FrameReader, ImageSequenceSink, NpzFramesSink, is_video, probe_video
from anydepth_cli.io.writers import read_png16
from anydepth_cli.pipelines.photos import TilingOptions
from anydepth_cli.pipelines.video import VideoOptions, run_video

NO_TILING = TilingOptions("off", default_tile_config(518))


def make_clip(path: Path, frames: int = 20, size: tuple[int, int] = (96, 64), fps: float = 12.0,
              fourcc: str = "mp4v") -> tuple[np.ndarray, np.ndarray]:
    """Write a clip of two shapes moving over a static slanted background.

    Returns the true disparity of every frame (N×H×W float32, large = near) and the mask of
    static pixels (never covered by a moving shape).
    """
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = 0.2 + 0.8 * yy / height + 0.1 * np.sin(xx / 6.0) * np.cos(yy / 9.0)
    texture = np.stack([(xx * 5) % 256, (yy * 7) % 256, (xx + yy) * 3 % 256], axis=-1)
    truth, moving = [], np.zeros((height, width), dtype=bool)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for t in range(frames):
        disc = (xx - (0.1 + 0.8 * t / frames) * width) ** 2 + (yy - 0.35 * height) ** 2 < (0.12 * height) ** 2
        square = (np.abs(xx - 0.7 * width) < 0.1 * width) & (np.abs(yy - (0.2 + 0.6 * t / frames) * height) < 0.1 * height)
        disparity = np.where(disc, 1.8, np.where(square, 1.4, background)).astype(np.float32)
        moving |= disc | square
        rgb = np.where((disc | square)[..., None], [240.0, 40, 40], texture * (0.5 + 0.5 * disparity[..., None] / 2))
        writer.write(np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8)[..., ::-1]))
        truth.append(disparity)
    writer.release()
    return np.stack(truth), ~moving


class OracleNetwork:
    """Returns the clip's true disparity for each frame it is given, in order, under a random
    per-frame scale and shift plus a little noise; raises KeyboardInterrupt at frame `stop_at`."""

    input_size = 518
    output_kind = "disparity"

    def __init__(self, truth: np.ndarray, seed: int = 0, stop_at: int | None = None) -> None:
        self.truth, self.next, self.stop_at = truth, 0, stop_at
        self.rng = np.random.default_rng(seed)

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        maps = []
        for image in images:
            if self.next == self.stop_at:
                raise KeyboardInterrupt
            truth = self.truth[self.next]
            assert image.shape[:2] == truth.shape
            scale, shift = self.rng.uniform(0.3, 3.0), self.rng.uniform(-2.0, 2.0)
            noise = self.rng.normal(0.0, 0.005, truth.shape)
            maps.append(((truth + noise) * scale + shift).astype(np.float32))
            self.next += 1
        return maps


class Recorder:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.done = 0
        self.warnings: list[str] = []

    def started(self, video: Path, total: int | None) -> None:
        self.total = total

    def frames_done(self, count: int) -> None:
        self.done += count

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def read_all(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while (result := capture.read())[0]:
        frames.append(result[1])
    capture.release()
    return frames, fps


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*")]


def flicker(maps: np.ndarray, static: np.ndarray) -> float:
    """Mean absolute frame-to-frame change on static pixels of the maps normalised to the
    clip's 1st–99th percentile range."""
    low, high = np.percentile(maps, [1.0, 99.0])
    normalised = (maps - low) / (high - low)
    return float(np.abs(np.diff(normalised, axis=0))[:, static].mean())


def test_stabilised_flicker_is_at_most_a_fifth_of_the_unstabilised(tmp_path):
    clip = tmp_path / "clip.mp4"
    truth, static = make_clip(clip, frames=24)
    measured = {}
    for stabilize in (True, False):
        out = tmp_path / f"out-{stabilize}"
        options = VideoOptions(out, raw="npz", stabilize=stabilize)
        run_video(clip, OracleNetwork(truth), options, NO_TILING, Recorder(), batch_size=4)
        measured[stabilize] = flicker(np.load(out / "clip_disparity.npz")["disparity"].astype(np.float32), static)
    ratio = measured[True] / measured[False]
    print(f"flicker stabilised {measured[True]:.5f}, unstabilised {measured[False]:.5f}, ratio {ratio:.4f}")
    assert ratio <= 0.2


def test_stabiliser_keeps_the_first_frame_and_recovers_from_a_cut():
    rng = np.random.default_rng(1)
    scene = rng.uniform(0.5, 2.0, (60, 80)).astype(np.float32)
    other = rng.uniform(0.5, 2.0, (60, 80)).astype(np.float32)
    stabilizer = FrameStabilizer()

    def aligned(disparity: np.ndarray) -> np.ndarray:
        return stabilizer.fit(disparity).apply(disparity)

    np.testing.assert_array_equal(aligned(scene), scene)
    np.testing.assert_allclose(aligned(scene * 3 + 1), scene, atol=1e-4)
    assert not stabilizer.last_reset
    cut = aligned(-other)  # a new scene the reference cannot explain
    assert stabilizer.last_reset
    assert np.corrcoef(cut.ravel(), -other.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(aligned(-other * 0.5 + 4), cut, atol=1e-3)


def test_clip_colour_range_only_widens():
    colours = ClipColourRange()
    assert colours.update(np.zeros((8, 8))) is None
    low, high = colours.update(np.linspace(0, 1, 100).reshape(10, 10))
    assert colours.update(np.linspace(0.2, 0.8, 100).reshape(10, 10)) == (low, high)
    wider = colours.update(np.linspace(-1, 2, 100).reshape(10, 10))
    assert wider[0] < low and wider[1] > high
    assert colours.update(np.linspace(0, 1, 100).reshape(10, 10), Affine(10.0, 0.0))[1] > 9


def test_writer_and_reader_round_trip_with_frame_selection(tmp_path):
    frames = [np.full((48, 64, 3), 10 * i, dtype=np.uint8) for i in range(15)]
    sink, note = open_video_writer(tmp_path / "round", 10.0, (64, 48))
    assert note is None
    for frame in frames:
        sink.put(frame)
    path = sink.close()
    assert path == tmp_path / "round.mp4" and is_video(path) and leftovers(tmp_path) == []
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count, info.fps) == (64, 48, 15, 10.0)
    with FrameReader(path) as reader:
        decoded = list(reader)
    assert [i for i, _ in decoded] == list(range(15))
    assert all(np.abs(f.astype(int) - frames[i]).mean() < 4 for i, f in decoded)
    with FrameReader(path, start=2, max_frames=4, stride=3) as reader:
        assert reader.expected == 4
        picked = list(reader)
    assert [i for i, _ in picked] == [2, 5, 8, 11]
    assert all(np.abs(f.astype(int) - frames[i]).mean() < 4 for i, f in picked)
    assert reader.shortfall() is None


def test_truncated_file_gives_the_decoded_frames_and_a_warning(tmp_path):
    clip = tmp_path / "cut.avi"
    truth, _ = make_clip(clip, frames=30, fourcc="MJPG")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    report = Recorder()
    summary = run_video(clip, OracleNetwork(truth), VideoOptions(tmp_path / "out", raw="npz"), NO_TILING, report)
    assert 0 < summary.frames < 30 and report.total == 30
    assert summary.warnings == report.warnings and len(report.warnings) == 1
    assert f"decoded {summary.frames} of the 30 frames" in report.warnings[0]
    written, _ = read_all(tmp_path / "out" / "cut_depth.mp4")
    assert len(written) == summary.frames
    assert np.load(tmp_path / "out" / "cut_disparity.npz")["disparity"].shape[0] == summary.frames


@pytest.mark.parametrize("case", ["junk", "empty", "moov-missing"])
def test_unreadable_file_is_a_clear_error(tmp_path, case):
    path = tmp_path / "bad.mp4"
    if case == "moov-missing":
        make_clip(path, frames=10)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"this is not a video" if case == "junk" else b"")
    with pytest.raises(InputError, match="cannot read video .*bad.mp4"):
        probe_video(path)
    with pytest.raises(InputError, match="cannot read video"):
        run_video(path, OracleNetwork(np.zeros((1, 8, 8))), VideoOptions(tmp_path / "out"), NO_TILING, Recorder())
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


def test_bad_selections_are_usage_errors(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=5)
    for kwargs, text in [({"start": 5}, "past the end"), ({"stride": 0}, "--stride"), ({"max_frames": 0}, "--max-frames")]:
        with pytest.raises(UsageError, match=text):
            FrameReader(clip, **kwargs)
    with pytest.raises(UsageError, match="no such video"):
        probe_video(tmp_path / "missing.mp4")


def test_codec_failure_falls_back_to_a_png_sequence(tmp_path):
    clip = tmp_path / "clip.mp4"
    truth, _ = make_clip(clip, frames=6)
    report = Recorder()
    options = VideoOptions(tmp_path / "out", side_by_side=True, codec="mp4v", opencv_codecs=(("ZZZZ", ".mp4"),))
    summary = run_video(clip, OracleNetwork(truth), options, NO_TILING, report, batch_size=4)
    folder = tmp_path / "out" / "clip_depth_frames"
    assert summary.outputs["depth"] == folder
    assert any("PNG frames" in w and str(folder) in w for w in report.warnings)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [FRAME_NAME.format(i) for i in range(6)]
    assert cv2.imread(str(folder / names[0])).shape == (64, 96, 3)
    assert cv2.imread(str(tmp_path / "out" / "clip_side_frames" / names[-1])).shape == (64, 192, 3)
    assert leftovers(tmp_path / "out") == []


def test_second_codec_is_used_when_the_first_fails(tmp_path):
    sink, note = open_video_writer(tmp_path / "v", 5.0, (32, 32), "mp4v", opencv_codecs=(("ZZZZ", ".mp4"), ("MJPG", ".avi")))
    sink.put(np.zeros((32, 32, 3), np.uint8))
    assert sink.close() == tmp_path / "v.avi" and "MJPG" in note
    assert len(read_all(tmp_path / "v.avi")[0]) == 1


@pytest.mark.parametrize("stop_at", [7, 0])
def test_interrupt_keeps_a_playable_partial_and_nothing_under_the_final_name(tmp_path, stop_at):
    clip = tmp_path / "clip.mp4"
    truth, _ = make_clip(clip, frames=20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_depth.partial.mp4").write_bytes(b"stale")
    report = Recorder()
    options = VideoOptions(out, raw="npz", side_by_side=True)
    with pytest.raises(KeyboardInterrupt):
        run_video(clip, OracleNetwork(truth, stop_at=stop_at), options, NO_TILING, report, batch_size=1)
    names = sorted(p.name for p in out.iterdir())
    assert not any(name in names for name in ("clip_depth.mp4", "clip_side.mp4", "clip_disparity.npz"))
    assert leftovers(out) == []
    if stop_at == 0:
        assert names == ["clip_depth.partial.mp4"] and report.warnings == []  # the stale file is untouched
        return
    assert names == ["clip_depth.partial.mp4", "clip_disparity.partial.npz", "clip_side.partial.mp4"]
    assert "kept the 7 frame(s)" in report.warnings[0]
    frames, fps = read_all(out / "clip_depth.partial.mp4")
    assert len(frames) == 7 and fps == 12.0
    assert np.load(out / "clip_disparity.partial.npz")["frame_index"].tolist() == list(range(7))


def test_a_clean_run_removes_a_stale_partial(tmp_path):
    clip = tmp_path / "clip.mp4"
    truth, _ = make_clip(clip, frames=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_depth.partial.mp4").write_bytes(b"stale")
    run_video(clip, OracleNetwork(truth), VideoOptions(out), NO_TILING, Recorder())
    assert sorted(p.name for p in out.iterdir()) == ["clip_depth.mp4"]


def test_a_writer_error_is_raised_and_leaves_nothing(tmp_path):
    def full_disk(path: Path, frame: np.ndarray) -> None:
        raise OSError(28, "No space left on device")

    sink = ImageSequenceSink(tmp_path / "frames", full_disk)
    sink.put(np.zeros((4, 4)))
    with pytest.raises(OutputError, match="No space left"):
        sink.close()
    assert list(tmp_path.iterdir()) == []


def test_npz_sink_stacks_frames_as_float16(tmp_path):
    sink = NpzFramesSink(tmp_path / "raw.npz", {"fps": 7.5})
    for i in range(3):
        sink.put((10 + i, np.full((4, 5), i / 3, dtype=np.float32)))
    sink.close()
    archive = np.load(tmp_path / "raw.npz")
    assert archive["disparity"].dtype == np.float16 and archive["disparity"].shape == (3, 4, 5)
    np.testing.assert_allclose(archive["disparity"][:, 0, 0], [0, 1 / 3, 2 / 3], atol=1e-3)
    assert archive["frame_index"].tolist() == [10, 11, 12] and float(archive["fps"]) == 7.5


# ---------------------------------------------------------------- codecs, raw sequences

def decode(path: Path) -> tuple[str, list[np.ndarray], float]:
    """A video through OpenCV's own FFmpeg, a reader independent of the PyAV that writes H.264 and FFV1:
    its codec's FourCC, every frame (BGR), and its frame rate."""
    capture = cv2.VideoCapture(str(path))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while (result := capture.read())[0]:
        frames.append(result[1])
    capture.release()
    return fourcc, frames, fps


@pytest.mark.parametrize("codec,fourcc,suffix", [("h264", "h264", ".mp4"), ("mp4v", "FMP4", ".mp4"),
                                                 ("ffv1", "ffv1", ".mkv")])  # FFmpeg tags MPEG-4 Part 2 FMP4
def test_every_codec_plays_back_in_an_independent_reader(tmp_path, codec, fourcc, suffix):
    clip = tmp_path / "clip.mp4"
    truth, _ = make_clip(clip, frames=10, size=(96, 64), fps=12.0)
    options = VideoOptions(tmp_path / "out", side_by_side=True, codec=codec)
    summary = run_video(clip, OracleNetwork(truth), options, NO_TILING, Recorder(), batch_size=4)
    assert summary.outputs == {"depth": tmp_path / "out" / f"clip_depth{suffix}",
                               "side": tmp_path / "out" / f"clip_side{suffix}"}
    for kind, width in (("depth", 96), ("side", 192)):
        found, frames, fps = decode(summary.outputs[kind])
        assert (found, len(frames), frames[0].shape, fps) == (fourcc, 10, (64, width, 3), 12.0)
    _, depth, _ = decode(summary.outputs["depth"])
    grey = [np.ptp(frame.astype(int), axis=2).max() == 0 for frame in depth]
    assert all(grey) == (codec == "ffv1")  # FFV1 stores grey levels; the others the colour map
    assert leftovers(tmp_path / "out") == []


def test_h264_pads_odd_sizes_to_even_with_the_edge_and_keeps_odd_rates(tmp_path):
    yy, xx = np.mgrid[0:63, 0:95].astype(np.float32)
    frames = [np.stack([xx * 2 + 40, yy * 3 + 40, 60 + 30 * np.sin((xx + 4 * t) / 9)], -1).astype(np.uint8)
              for t in range(5)]  # smooth, bright at the bottom right, like a depth picture
    sink, note = open_video_writer(tmp_path / "odd", 30000 / 1001, (95, 63), "h264")
    for frame in frames:
        sink.put(frame)
    assert sink.close() == tmp_path / "odd.mp4" and note is None
    fourcc, decoded, fps = decode(tmp_path / "odd.mp4")
    assert (fourcc, len(decoded), decoded[0].shape) == ("h264", 5, (64, 96, 3))
    assert fps == pytest.approx(30000 / 1001, abs=1e-9)
    rgb = decoded[2][..., ::-1].astype(int)
    assert np.abs(rgb[:63, :95] - frames[2]).mean() < 3  # lossy, but the picture is where it was
    assert np.abs(rgb[63] - rgb[62]).mean() < 3 and np.abs(rgb[:, 95] - rgb[:, 94]).mean() < 3


def test_ffv1_is_lossless_for_grey_and_colour_frames(tmp_path):
    rng = np.random.default_rng(1)
    levels = [rng.integers(0, 256, (31, 45), dtype=np.uint8) for _ in range(4)]
    colour = [rng.integers(0, 256, (31, 45, 3), dtype=np.uint8) for _ in range(4)]
    grey_pictures = [np.repeat(level[..., None], 3, axis=2) for level in levels]
    for name, frames, grey in (("grey", grey_pictures, True), ("colour", colour, False)):
        sink, _ = open_video_writer(tmp_path / name, 7.5, (45, 31), "ffv1", grey=grey)
        for frame in frames:
            sink.put(frame)
        fourcc, decoded, fps = decode(sink.close())
        assert (fourcc, len(decoded), fps) == ("ffv1", 4, 7.5)
        assert all(np.array_equal(got[..., ::-1], sent) for got, sent in zip(decoded, frames))


def test_without_pyav_h264_becomes_mp4v_with_a_note_and_ffv1_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as without PyAV
    codec, note = resolve_codec("h264")
    assert codec == "mp4v" and "PyAV is not installed" in note and "mp4v" in note
    with pytest.raises(UsageError, match="--codec ffv1 needs PyAV"):
        resolve_codec("ffv1")
    sink, note = open_video_writer(tmp_path / "v", 10.0, (32, 32), "h264")
    sink.put(np.zeros((32, 32, 3), np.uint8))
    assert sink.close() == tmp_path / "v.mp4" and "writing mp4v" in note
    assert decode(tmp_path / "v.mp4")[0] == "FMP4"
    with pytest.raises(OutputError, match="PyAV is not installed"):
        open_video_writer(tmp_path / "w", 10.0, (32, 32), "ffv1")


def test_raw_sequences_are_numbered_by_source_frame_from_one_and_hold_the_npz_maps(tmp_path):
    clip = tmp_path / "clip.mp4"
    truth, _ = make_clip(clip, frames=12)
    raws = {}
    for raw in ("npz", "exr", "png16"):
        options = VideoOptions(tmp_path / raw, raw=raw, start=2, stride=3, max_frames=3)
        raws[raw] = run_video(clip, OracleNetwork(truth), options, NO_TILING, Recorder(), batch_size=2).outputs["raw"]
    archive = np.load(raws["npz"])
    assert archive["frame_index"].tolist() == [2, 5, 8]
    assert raws["exr"] == tmp_path / "exr" / "clip_disparity"
    assert raws["png16"] == tmp_path / "png16" / "clip_disparity16"
    assert [p.name for p in sorted(raws["exr"].iterdir())] == [f"clip_disparity.{n:06d}.exr" for n in (3, 6, 9)]
    assert [p.name for p in sorted(raws["png16"].iterdir())] == [f"clip_disparity16.{n:06d}.png" for n in (3, 6, 9)]
    import OpenEXR

    for expected, exr, png in zip(archive["disparity"], sorted(raws["exr"].iterdir()), sorted(raws["png16"].iterdir())):
        with OpenEXR.File(str(exr)) as image:
            values = image.channels()["Y"].pixels.copy()
        assert values.dtype == np.float32 and np.ptp(values) > 0.5
        np.testing.assert_allclose(values, expected.astype(np.float32), rtol=2e-3, atol=2e-3)  # the npz is float16
        np.testing.assert_allclose(read_png16(png), values, atol=np.ptp(values) / 65535 + 1e-6)


def test_a_sequence_is_written_frame_by_frame_as_the_frames_come(tmp_path):
    sink = ImageSequenceSink(tmp_path / "seq", lambda path, frame: np.save(path, frame), queue_size=1, indexed=True,
                             name="seq.{:06d}.npy".format)
    temp = next(tmp_path.iterdir())
    for number in range(1, 4):
        sink.put((number, np.full((2, 2), number)))
        deadline = time.monotonic() + 10
        while len(list(temp.iterdir())) < number - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(list(temp.iterdir())) >= number - 1  # the earlier frames are on disk, not held back
    assert sorted(p.name for p in sink.close().iterdir()) == [f"seq.{n:06d}.npy" for n in (1, 2, 3)]
