"""Precision choice: what the CPU offers for bf16, what `auto` picks and why, what doctor and predict say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anydepth_cli.inference import precision
from anydepth_cli.inference.precision import (choose_precision, cpu_flags, select_dtype, slow_precision_note,
                                              training_dtype)
from conftest import run_cli, save_photo, tiny_model_args

CPU = torch.device("cpu")


def fake_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: str) -> None:
    """Make this process see a CPU with `flags` (a /proc/cpuinfo written in tmp_path)."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(cpuinfo))
    precision.cpu_bf16_instructions.cache_clear()


@pytest.fixture(autouse=True)
def fresh_detection():
    precision.cpu_bf16_instructions.cache_clear()
    yield
    precision.cpu_bf16_instructions.cache_clear()


@pytest.mark.parametrize("flags,found,auto", [
    ("fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "AMX-BF16", torch.bfloat16),
    ("fpu sse avx2 avx512f avx512_bf16", "AVX512-BF16", torch.bfloat16),
    ("fpu sse avx2 avx512f avx512_vnni", None, torch.float32),
])
def test_auto_on_the_cpu_follows_its_bf16_instructions(monkeypatch, tmp_path, flags, found, auto):
    fake_cpu(monkeypatch, tmp_path, flags)
    assert precision.cpu_bf16_instructions() == found
    choice = choose_precision("auto", CPU)
    assert choice.dtype == auto and select_dtype("auto", CPU) == auto
    assert (found or "neither AMX-BF16 nor AVX512-BF16") in choice.reason
    assert training_dtype("auto", CPU) == torch.float32  # training keeps fp32 on the CPU
    assert choose_precision("fp32", CPU).dtype == torch.float32


def test_bf16_without_bf16_instructions_says_it_will_be_slow(monkeypatch, tmp_path):
    fake_cpu(monkeypatch, tmp_path, "fpu sse avx2 avx512f")
    note = slow_precision_note(torch.bfloat16, CPU)
    assert note is not None and "slower than fp32" in note and "\n" not in note
    assert slow_precision_note(torch.float32, CPU) is None and slow_precision_note(None, CPU) is None
    fake_cpu(monkeypatch, tmp_path, "fpu avx512_bf16")
    assert slow_precision_note(torch.bfloat16, CPU) is None


def test_unreadable_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_doctor_reports_the_cpu_precision_auto_picks_and_why():
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    choice = choose_precision("auto", CPU)
    assert facts["cpu_bf16"] == precision.cpu_bf16_instructions()
    assert facts["cpu_precision"] == {"auto": choice.name, "reason": choice.reason}
    table = run_cli("doctor")
    assert f"--precision auto runs {choice.name}" in table.stdout


def test_predict_in_bf16_says_it_is_slow_only_where_the_cpu_lacks_bf16(tmp_path):
    photo = save_photo(tmp_path / "in" / "a.png", 64, 48)
    result = run_cli("predict", photo, "-o", tmp_path / "out", *tiny_model_args("tiny_dinov3_sdt"), "--device", "cpu",
                     "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    expected = slow_precision_note(torch.bfloat16, CPU)
    if expected is None:
        assert "emulated" not in result.stderr
    else:
        assert expected in " ".join(result.stderr.split())
