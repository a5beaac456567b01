"""benchmarks/gpu_checks.py on the CPU: the summary survives numpy values, failed and timed-out checks and Ctrl+C,
and its --quick mode runs checks end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures_dir import fixtures_dir

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_checks.py"


@pytest.fixture(scope="module")
def gpu_checks():
    spec = importlib.util.spec_from_file_location("gpu_checks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_summary_converts_numpy_values(gpu_checks, tmp_path: Path) -> None:
    summary = {"met": np.bool_(True), "missed": np.float32(2.5) <= 1, "rate": np.float64(301.25),
               "count": np.int64(500), "map": np.arange(3, dtype=np.int32), "folder": tmp_path}
    gpu_checks.write_summary(summary, tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == {
        "met": True, "missed": False, "rate": 301.25, "count": 500, "map": [0, 1, 2], "folder": str(tmp_path)}


def test_timeout_kills_what_the_command_started(gpu_checks) -> None:
    # the grandchild holds the pipes: unless the whole group is killed, reading them back would wait for it
    sleeper = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(gpu_checks.CheckTimeout, match=r"^timed out after 2 s \(sleeper\)$"):
        gpu_checks.run([sys.executable, "-c", sleeper], 2.0, "sleeper")
    assert time.monotonic() - started < 15


def test_failed_check_keeps_its_figures_and_the_others_run(gpu_checks, tmp_path: Path, monkeypatch) -> None:
    def fails(context) -> None:
        context.result["png"] = {"images_per_s": np.float64(12.5)}
        raise ValueError("no summary line")

    def overruns(context) -> None:
        context.deadline = time.monotonic()
        context.remaining()

    def passes(context) -> None:
        context.result["goals"] = {"fast": np.float32(3.0) < 4.0}

    monkeypatch.setitem(gpu_checks.CHECKS, "predict", fails)
    monkeypatch.setitem(gpu_checks.CHECKS, "eval", overruns)
    monkeypatch.setitem(gpu_checks.CHECKS, "train", passes)
    gpu_checks.run_checks(["predict", "eval", "train"], tmp_path, "cpu", "fp32", True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["checks"]["predict"]["error"] == "ValueError: no summary line"
    assert summary["checks"]["predict"]["png"] == {"images_per_s": 12.5}
    assert summary["checks"]["eval"]["error"] == "timed out after 120 s"
    assert summary["checks"]["train"]["goals"] == {"fast": True}
    assert summary["goals"] == {"train fast": True}


def test_interrupt_writes_the_summary(gpu_checks, tmp_path: Path, monkeypatch) -> None:
    def interrupted(context) -> None:
        context.result["png"] = {"written": 3}
        raise KeyboardInterrupt

    monkeypatch.setitem(gpu_checks.CHECKS, "predict", interrupted)
    monkeypatch.setitem(gpu_checks.CHECKS, "train", lambda context: pytest.fail("ran after Ctrl+C"))
    with pytest.raises(KeyboardInterrupt):
        gpu_checks.run_checks(["predict", "train"], tmp_path, "cpu", "fp32", True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["checks"] == {"predict": {"png": {"written": 3}, "error": "interrupted"}}


def test_unknown_check_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--only", "bench,speed", "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert "unknown check(s) speed" in done.stderr


@pytest.mark.slow
def test_quick_mode_runs_the_video_check(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO), "ANYDEPTH_FIXTURES_DIR": str(fixtures_dir())}
    done = subprocess.run([sys.executable, str(SCRIPT), "-o", str(tmp_path), "--device", "cpu", "--quick",
                           "--only", "video"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    checks = json.loads((tmp_path / "summary.json").read_text())["checks"]
    assert "error" not in checks["video"], checks
    assert checks["video"]["frames"] == 16 and checks["video"]["size"] == "128x96"
    assert checks["video"]["frames_per_s"] > 0 and checks["video"]["codec"] in ("h264", "mp4v")
    assert (tmp_path / "video" / "out").is_dir()
