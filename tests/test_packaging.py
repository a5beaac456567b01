"""Completions, entry points, version and start-up: the parts of the CLI that fit the user's shell."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import cli_env, run_cli
from fixtures_dir import REPO


def test_committed_completions_are_current():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "make_completions.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_bash_completion_offers_commands_and_options():
    env = cli_env(_ANYDEPTH_COMPLETE="complete_bash", COMP_WORDS="anydepth pre", COMP_CWORD="1")
    result = subprocess.run([sys.executable, "-m", "anydepth_cli"], capture_output=True, text=True, env=env)
    assert "predict" in result.stdout.split()
    env.update(COMP_WORDS="anydepth predict x --sid", COMP_CWORD="3")
    result = subprocess.run([sys.executable, "-m", "anydepth_cli"], capture_output=True, text=True, env=env)
    assert "--side-by-side" in result.stdout.split()


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["predict", "--help"], ["bench", "--help"],
                                  ["export", "--help"]])
def test_version_and_help_do_not_import_torch(args):
    code = (f"import sys; sys.argv = ['anydepth', *{args!r}]\n"
            "from anydepth_cli.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch-imported' if 'torch' in sys.modules else 'torch-free')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())
    assert result.stdout.split()[-1] == "torch-free", result.stdout + result.stderr


def test_doctor_json_reports_the_installation():
    result = run_cli("doctor", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["torch"].startswith("2.") and facts["cpu_threads"] >= 1
    assert set(facts) >= {"cuda_devices", "mps", "hub_cache", "offline", "cached_models", "mp4_writer"}


@pytest.mark.slow
def test_the_wheel_ships_the_package_and_the_sanity_check_mask(tmp_path):
    import zipfile

    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("anydepth_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "anydepth_cli/evaluation/samples/grace_hopper_foreground.png" in names
    assert "anydepth_cli/training/loop.py" in names and "anydepth_cli/export/onnx.py" in names
    assert not [name for name in names if name.startswith(("tests/", "assets/", "tools/"))]
