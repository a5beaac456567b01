"""Awkward video inputs, made here with OpenCV and, where OpenCV cannot write the metadata, by editing
the MP4 boxes it wrote: files without frames, phone videos with a rotation, variable frame rates."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from anydepth_cli.errors import InputError
from anydepth_cli.io.video import FrameReader, probe_video
from anydepth_cli.pipelines.video import VideoOptions, run_video
from conftest import run_cli
from test_video import NO_TILING, OracleNetwork, Recorder, leftovers, make_clip, read_all

_CONTAINERS = {b"moov", b"trak", b"edts", b"mdia", b"minf", b"stbl"}


def _box_chain(data: bytes | bytearray, kind: bytes, start: int = 0, end: int | None = None) -> list[int]:
    """Offsets of the boxes from the top level down to the first `kind` box (empty if none)."""
    offset, end = start, len(data) if end is None else end
    while offset < end:
        size, name = struct.unpack(">I4s", data[offset:offset + 8])
        if name == kind:
            return [offset]
        if name in _CONTAINERS:
            inner = _box_chain(data, kind, offset + 8, offset + size)
            if inner:
                return [offset, *inner]
        offset += size
    return []


def _field(kind: bytes, data: bytearray, at: int) -> int:
    """Offset of the 32-bit field `at` bytes after the version/flags word of the first `kind` box."""
    box = _box_chain(data, kind)[-1]
    assert data[box + 8] == 0, "expected a version 0 box"
    return box + 12 + at


def rotate_mp4(path: Path) -> None:
    """Mark an MP4's video track as shown rotated 90° clockwise, as a phone held upright records it."""
    data = bytearray(path.read_bytes())
    matrix = _field(b"tkhd", data, 36)  # after times, track id, duration, layer, group, volume
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    path.write_bytes(data)


def make_variable_rate_mp4(path: Path, frames: int) -> None:
    """Turn a constant-rate MP4 of an even number of frames into one whose second half lasts three
    times as long per frame (twice the clip's duration), with every duration field to match."""
    data = bytearray(path.read_bytes())
    chain = _box_chain(data, b"stts")
    stts = chain[-1]
    size = struct.unpack(">I", data[stts:stts + 4])[0]
    count, delta = struct.unpack(">II", data[stts + 16:stts + 24])
    assert count == frames and frames % 2 == 0
    table = struct.pack(">IIII", frames // 2, delta, frames // 2, 3 * delta)
    new = struct.pack(">I4sII", 16 + len(table), b"stts", 0, 2) + table
    for parent in chain[:-1]:  # moov comes after mdat here, so no chunk offset moves
        data[parent:parent + 4] = struct.pack(">I", struct.unpack(">I", data[parent:parent + 4])[0] + len(new) - size)
    data[stts:stts + size] = new
    for kind, at in ((b"mvhd", 12), (b"tkhd", 16), (b"mdhd", 12), (b"elst", 4)):
        where = _field(kind, data, at)
        data[where:where + 4] = struct.pack(">I", 2 * struct.unpack(">I", data[where:where + 4])[0])
    path.write_bytes(data)


def test_a_file_without_frames_is_one_clear_line(tmp_path):
    clip = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    writer.release()
    assert clip.stat().st_size > 0
    with pytest.raises(InputError, match="cannot read video .*empty.mp4: .*without frames"):
        probe_video(clip)
    result = run_cli("predict", clip, "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "without frames" in result.stderr
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


def test_a_rotated_phone_video_gives_an_upright_depth_video(tmp_path):
    clip = tmp_path / "phone.mp4"
    truth, _ = make_clip(clip, frames=8, size=(96, 64))
    stored = read_all(clip)[0]
    rotate_mp4(clip)
    upright = [np.rot90(frame, k=-1) for frame in stored]  # what a player shows

    info = probe_video(clip)
    assert (info.width, info.height) == (64, 96)
    with FrameReader(clip) as reader:
        decoded = [frame for _, frame in reader]
    assert all(np.array_equal(frame, shown[..., ::-1]) for frame, shown in zip(decoded, upright))

    # The oracle checks that every frame it gets has the upright shape of its truth.
    network = OracleNetwork(np.rot90(truth, k=-1, axes=(1, 2)).copy())
    summary = run_video(clip, network, VideoOptions(tmp_path / "out"), NO_TILING, Recorder())
    assert summary.frames == 8 and summary.size == (64, 96)
    written, _ = read_all(tmp_path / "out" / "phone_depth.mp4")
    assert len(written) == 8 and written[0].shape == (96, 64, 3)
    # Near is bright: the near bottom rows of the stored frames are the left columns once upright.
    grey = written[0].mean(axis=2)
    assert grey[:, :16].mean() > grey[:, -16:].mean()


def test_a_variable_frame_rate_video_keeps_every_frame_and_its_duration(tmp_path):
    clip = tmp_path / "vfr.mp4"
    truth, _ = make_clip(clip, frames=10, fps=12.0)
    make_variable_rate_mp4(clip, 10)
    info = probe_video(clip)
    assert info.frame_count == 10 and info.fps == pytest.approx(6.0)  # 10 frames over 10/6 s

    summary = run_video(clip, OracleNetwork(truth), VideoOptions(tmp_path / "out"), NO_TILING, Recorder())
    assert summary.frames == 10 and not summary.warnings
    written, fps = read_all(tmp_path / "out" / "vfr_depth.mp4")
    assert len(written) == 10 and len(written) / fps == pytest.approx(10 / 6.0)
