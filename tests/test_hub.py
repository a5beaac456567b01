"""anydepth_cli.weights.hub against the real huggingface_hub, talking to a loopback Hub (tests/hubserver.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from anydepth_cli.weights import hub
from anydepth_cli.errors import HubError
from hubserver import HubServer

FIXTURES = Path(os.environ.get("ANYDEPTH_FIXTURES_DIR", Path(__file__).parents[1] / "../shared/fixtures")).resolve()
WEIGHTS = FIXTURES / "tiny_dav2_sdt.pth"
REPO = "test-org/anydepth-test"
FILENAME = "tiny_dav2_sdt.pth"
GATED_REPO = "test-org/anydepth-gated"
GATED_TOKEN = "hf_loopbacktesttoken"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gets(server: HubServer) -> int:
    return sum(request.method == "GET" for request in server.requests)


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HF_HOME, with no other Hugging Face setting leaking in from the environment."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def server() -> HubServer:
    return HubServer({REPO: {FILENAME: WEIGHTS}, GATED_REPO: {FILENAME: WEIGHTS}}, gated={GATED_REPO: GATED_TOKEN})


@pytest.fixture
def online(hf_home: Path, server: HubServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """The loopback Hub, running, with HF_ENDPOINT pointing at it."""
    with server as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        yield server


@pytest.fixture
def closed_port_endpoint() -> str:
    """An endpoint on a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def download_then_stop(server: HubServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Download the test weights from a server that is shut down afterwards."""
    with server as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        path = hub.download(REPO, FILENAME)
    assert gets(server) == 1
    return path


def test_cache_dir_follows_environment_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == tmp_path / "elsewhere"


def test_download_puts_identical_bytes_in_the_cache_under_hf_home(online: HubServer, hf_home: Path) -> None:
    path = hub.download(REPO, FILENAME)

    assert sha256(path) == sha256(WEIGHTS)
    assert path.is_relative_to(hf_home / "hub")
    assert path.parent.name == online.commit_hash(REPO)
    assert path.resolve().parent.name == "blobs"
    assert path.resolve().name == sha256(WEIGHTS)
    # A file not yet cached is first asked about once, without the library's retries, then downloaded.
    assert [(r.method, r.path) for r in online.requests] == [
        ("HEAD", f"/{REPO}/resolve/main/{FILENAME}"),
        ("HEAD", f"/{REPO}/resolve/main/{FILENAME}"),
        ("GET", f"/{REPO}/resolve/main/{FILENAME}"),
    ]
    assert hub.cached_path(REPO, FILENAME) == path


def test_second_online_download_checks_the_hub_but_reuses_the_cached_bytes(online: HubServer) -> None:
    first = hub.download(REPO, FILENAME)
    second = hub.download(REPO, FILENAME)

    assert second == first
    assert gets(online) == 1
    # Two for the first download (the check of an uncached file, then hf_hub_download's), one for the second.
    assert [r.method for r in online.requests].count("HEAD") == 3


def test_download_at_a_commit_hash(online: HubServer) -> None:
    path = hub.download(REPO, FILENAME, revision=online.commit_hash(REPO))
    assert sha256(path) == sha256(WEIGHTS)
    assert online.requests[0].path == f"/{REPO}/resolve/{online.commit_hash(REPO)}/{FILENAME}"


def test_cached_path_is_none_before_download(hf_home: Path) -> None:
    assert hub.cached_path(REPO, FILENAME) is None


def test_offline_with_server_stopped_returns_the_cached_file(
    hf_home: Path, server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloaded = download_then_stop(server, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert hub.download(REPO, FILENAME) == downloaded
    assert sha256(downloaded) == sha256(WEIGHTS)


def test_offline_does_not_touch_the_network(online: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    downloaded = hub.download(REPO, FILENAME)
    requests_before = len(online.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert hub.download(REPO, FILENAME) == downloaded
    with pytest.raises(HubError):
        hub.download(REPO, "not-cached.pth")
    assert len(online.requests) == requests_before


def test_unreachable_endpoint_falls_back_to_the_cached_file(
    hf_home: Path, server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloaded = download_then_stop(server, monkeypatch)

    assert hub.download(REPO, FILENAME) == downloaded


def test_offline_with_empty_cache_says_what_to_do(online: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(HubError) as caught:
        hub.download(REPO, FILENAME, model="test-model")

    message = str(caught.value)
    assert "\n" not in message
    assert f"model test-model ({REPO}/{FILENAME})" in message
    assert "HF_HUB_OFFLINE" in message
    assert "run `anydepth models download test-model` while online" in message
    assert "--checkpoint FILE --arch FILE.json" in message
    assert online.requests == []


def test_offline_hint_for_a_file_of_no_registry_model(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An hf:// checkpoint is no registry model: `anydepth models download` cannot fetch it, so it is not suggested."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(HubError) as caught:
        hub.download(REPO, FILENAME)

    message = str(caught.value)
    assert f"{REPO}/{FILENAME} is not in the cache" in message
    assert "models download" not in message and "<model>" not in message


def test_unreachable_endpoint_with_empty_cache_raises_hub_error(
    hf_home: Path, closed_port_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", closed_port_endpoint)
    # hf_hub_download alone retries an unreachable endpoint with backoff (about 23 s of sleeping in all)
    # when nothing is cached; record any wait instead of spending it.
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)

    with pytest.raises(HubError) as caught:
        hub.download(REPO, FILENAME, model="test-model")

    message = str(caught.value)
    assert "\n" not in message
    assert f"cannot reach {closed_port_endpoint} to download model test-model ({REPO}/{FILENAME})" in message
    assert "run `anydepth models download test-model` once online" in message
    assert "--checkpoint FILE --arch FILE.json" in message
    assert waits == [], "an unreachable Hub must be reported without the library's retries"


@pytest.mark.parametrize("value", ["soon", "0", "-3", "2.5"])
def test_bad_etag_timeout_is_one_line(hf_home: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", value)
    with pytest.raises(HubError, match=f"HF_HUB_ETAG_TIMEOUT must be a whole number of seconds above 0, not '{value}'"):
        hub.download(REPO, FILENAME)


def test_endpoint_that_is_not_a_hub_is_reported(
    hf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain file server has the file at the right URL but none of the Hub's headers (X-Repo-Commit).
    root = tmp_path / "www"
    (root / REPO / "resolve" / "main").mkdir(parents=True)
    (root / REPO / "resolve" / "main" / FILENAME).write_bytes(b"not weights")
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        try:
            with pytest.raises(HubError, match="does not answer like a Hugging Face Hub"):
                hub.download(REPO, FILENAME)
        finally:
            httpd.shutdown()
            thread.join()
    assert hub.cached_path(REPO, FILENAME) is None


@pytest.mark.parametrize(
    ("repo_id", "filename", "revision", "expected"),
    [
        (REPO, "missing.pth", None, f"file missing.pth does not exist in {REPO}"),
        ("test-org/no-such-repo", FILENAME, None, "repository test-org/no-such-repo was not found"),
        (REPO, FILENAME, "v9", f"revision 'v9' does not exist in {REPO}"),
        (GATED_REPO, FILENAME, None, f"{GATED_REPO} is a gated repository"),
        ("not a repo id!", FILENAME, None, "invalid Hub repository id"),
    ],
    ids=["missing-file", "missing-repo", "missing-revision", "gated", "invalid-id"],
)
def test_hub_errors_become_one_clear_line(
    online: HubServer, repo_id: str, filename: str, revision: str | None, expected: str
) -> None:
    with pytest.raises(HubError) as caught:
        hub.download(repo_id, filename, revision=revision)

    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file_is_reported_on_every_try(online: HubServer) -> None:
    """The client caches a file's absence; asking again must still fail the same way, not differently."""
    for _ in range(2):
        with pytest.raises(HubError, match="file missing.pth does not exist"):
            hub.download(REPO, "missing.pth")
    assert hub.cached_path(REPO, "missing.pth") is None


def test_hf_token_is_read_at_call_time(online: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)

    path = hub.download(GATED_REPO, FILENAME)

    assert sha256(path) == sha256(WEIGHTS)
    assert {request.authorization for request in online.requests} == {f"Bearer {GATED_TOKEN}"}


def test_remove_cached_frees_the_bytes(online: HubServer) -> None:
    path = hub.download(REPO, FILENAME)
    blob = path.resolve()

    assert hub.remove_cached(REPO, FILENAME) == WEIGHTS.stat().st_size
    assert not blob.exists()
    assert not path.exists()
    assert hub.cached_path(REPO, FILENAME) is None
    assert hub.remove_cached(REPO, FILENAME) == 0

    assert sha256(hub.download(REPO, FILENAME)) == sha256(WEIGHTS)
    assert gets(online) == 2


def test_remove_cached_keeps_other_repos(online: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)
    kept = hub.download(GATED_REPO, FILENAME)
    hub.download(REPO, FILENAME)

    assert hub.remove_cached(REPO, FILENAME) == WEIGHTS.stat().st_size
    assert hub.cached_path(GATED_REPO, FILENAME) == kept
    assert sha256(kept) == sha256(WEIGHTS)


def test_remove_cached_without_a_cache_frees_nothing(hf_home: Path) -> None:
    assert not hub.cache_dir().exists()
    assert hub.remove_cached(REPO, FILENAME) == 0
