"""The real download path: the CLI fetches a checkpoint from a loopback Hub, then runs offline from the cache."""

from __future__ import annotations

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
    assert "offline" in result.stderr.lower() and "anydepth models download" in result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


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
