"""The real download path: the CLI fetches a checkpoint from a loopback Hub, then runs offline from the cache."""

from __future__ import annotations

import socket
import time

import pytest
from PIL import Image

from conftest import TINY, cli_env, run_cli, save_photo
from fixtures_dir import fixtures_dir
from hubserver import HubServer

pytestmark = pytest.mark.slow
REPO = "test-org/anydepth-test"


def test_download_predict_then_offline(tmp_path):
    photo = save_photo(tmp_path / "photo.jpg", 80, 60)
    home = tmp_path / "hf-home"
    args = ["predict", photo, "--checkpoint", f"hf://{REPO}/{TINY}.pth",
            "--arch", fixtures_dir() / f"{TINY}.json"]
    with HubServer({REPO: {f"{TINY}.pth": fixtures_dir() / f"{TINY}.pth"}}) as endpoint:
        first = run_cli(*args, "-o", tmp_path / "online", env=cli_env(HF_HOME=str(home), HF_ENDPOINT=endpoint))
    assert first.returncode == 0, first.stderr
    assert list((home / "hub").glob(f"models--test-org--anydepth-test/snapshots/*/{TINY}.pth"))
    assert Image.open(tmp_path / "online" / "photo_depth.png").size == (80, 60)

    second = run_cli(*args, "-o", tmp_path / "offline",
                     env=cli_env(HF_HOME=str(home), HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="1"))
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "offline" / "photo_depth.png").read_bytes() == (tmp_path / "online" / "photo_depth.png").read_bytes()


def test_offline_with_empty_cache_is_one_clear_line(tmp_path):
    photo = save_photo(tmp_path / "photo.jpg", 40, 30)
    result = run_cli("predict", photo, "-o", tmp_path / "o",
                     env=cli_env(HF_HOME=str(tmp_path / "empty"), HF_HUB_OFFLINE="1"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "offline" in result.stderr.lower() and "`anydepth models download anydepth-dav2-vitb`" in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_unreachable_hub_with_empty_cache_is_one_line_within_5_seconds(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    photo = save_photo(tmp_path / "photo.jpg", 40, 30)
    env = cli_env(HF_HOME=str(tmp_path / "empty"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    result = run_cli("predict", photo, "-o", tmp_path / "o", env=env, cwd=tmp_path)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach http://127.0.0.1:{port} to download model anydepth-dav2-vitb" in result.stderr
    assert "`anydepth models download anydepth-dav2-vitb`" in result.stderr
    assert seconds < 5, f"{seconds:.1f} s to report an unreachable Hub"


def test_malformed_hub_timeout_setting_is_one_line(tmp_path):
    """huggingface_hub itself fails with a traceback on import when HF_HUB_ETAG_TIMEOUT is not an integer."""
    result = run_cli("models", "download", "anydepth-dav2-vitb",
                     env=cli_env(HF_HOME=str(tmp_path / "empty"), HF_HUB_ETAG_TIMEOUT="soon"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "HF_HUB_ETAG_TIMEOUT" in result.stderr


def test_models_download_then_list_and_remove(tmp_path):
    """`models download/rm` against the loopback Hub, for a registry entry served under its real repo id."""
    from anydepth_cli.models.registry import get_model

    spec = get_model("dav2-dpt-vits")
    env = dict(HF_HOME=str(tmp_path / "home"))
    with HubServer({spec.repo_id: {spec.filename: fixtures_dir() / f"{TINY}.pth"}}) as endpoint:
        got = run_cli("models", "download", spec.name, env=cli_env(**env, HF_ENDPOINT=endpoint))
    assert got.returncode == 0, got.stderr
    listing = run_cli("models", env=cli_env(**env, HF_HUB_OFFLINE="1"))
    row = next(line for line in listing.stdout.splitlines() if spec.name in line and "│" in line)
    assert "yes" in row
    removed = run_cli("models", "rm", spec.name, env=cli_env(**env))
    assert removed.returncode == 0 and "freed" in removed.stderr
    listing = run_cli("models", env=cli_env(**env, HF_HUB_OFFLINE="1"))
    row = next(line for line in listing.stdout.splitlines() if spec.name in line and "│" in line)
    assert "yes" not in row
