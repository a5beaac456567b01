"""A loopback stand-in for the Hugging Face Hub's file endpoint, for tests.

It answers `HEAD` and `GET` on `/{repo_id}/resolve/{revision}/{filename}` the way the Hub answers
`hf_hub_download` of huggingface_hub 2.x, which needs nothing else from the server:

* success: 200 with `X-Repo-Commit` (the commit the revision resolves to), `ETag` (the file's
  sha256, which becomes the blob name in the cache) and `Content-Length`; `GET` also sends the bytes;
* errors: the status code plus `X-Error-Code` (`RepoNotFound`, `GatedRepo`, `RevisionNotFound`,
  `EntryNotFound`) and `X-Error-Message`, which huggingface_hub turns into its typed exceptions.
  `EntryNotFound` carries `X-Repo-Commit` too, which makes the client cache the file's absence.

It never sends `X-Xet-Hash` or a `Link: ...; rel="xet-auth"` header, so the client takes the plain
HTTP download path even when hf_xet is installed.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str
    authorization: str | None


@dataclass(frozen=True)
class _File:
    path: Path
    sha256: str
    size: int


class HubServer:
    """Serves `repos` ({repo_id: {filename: local file}}) on 127.0.0.1 while used as a context manager.

    Repos listed in `gated` ({repo_id: token}) answer like gated repos unless the request carries
    `Authorization: Bearer <token>`. Every request is recorded in `requests`.
    """

    def __init__(self, repos: Mapping[str, Mapping[str, Path]], gated: Mapping[str, str] | None = None) -> None:
        self._repos = {
            repo_id: {name: _describe_file(Path(path)) for name, path in files.items()}
            for repo_id, files in repos.items()
        }
        self._gated = dict(gated or {})
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def requests(self) -> list[Request]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def commit_hash(self, repo_id: str) -> str:
        """The commit every revision of `repo_id` resolves to (derived from its files)."""
        digest = hashlib.sha1(repo_id.encode())
        for name, served in sorted(self._repos[repo_id].items()):
            digest.update(f"{name}\0{served.sha256}\0".encode())
        return digest.hexdigest()

    def __enter__(self) -> str:
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hubserver", daemon=True
        )
        self._thread.start()
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._httpd is not None and self._thread is not None, "HubServer was not started"
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _route(self, path: str, authorization: str | None) -> tuple[int, dict[str, str], _File | None]:
        """Status, headers and file (None for an error) for a request path."""
        repo_id, marker, rest = urlsplit(path).path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        if not marker or not filename:
            return 404, {}, None
        repo_id, revision, filename = unquote(repo_id), unquote(revision), unquote(filename)
        if repo_id not in self._repos:
            return 401, _error("RepoNotFound", "Repository not found"), None
        token = self._gated.get(repo_id)
        if token is not None and authorization != f"Bearer {token}":
            return 401, _error("GatedRepo", f"Access to model {repo_id} is restricted."), None
        commit = self.commit_hash(repo_id)
        if revision not in ("main", commit):
            return 404, _error("RevisionNotFound", f"Invalid rev id: {revision}"), None
        served = self._repos[repo_id].get(filename)
        if served is None:
            return 404, {**_error("EntryNotFound", "Entry not found"), "X-Repo-Commit": commit}, None
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{served.sha256}"',
            "Content-Type": "application/octet-stream",
        }
        return 200, headers, served


def _describe_file(path: Path) -> _File:
    data = path.read_bytes()
    return _File(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _error(code: str, message: str) -> dict[str, str]:
    return {"X-Error-Code": code, "X-Error-Message": message}


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer

    def do_HEAD(self) -> None:  # noqa: N802 (name fixed by http.server)
        self._answer(send_body=False)

    def do_GET(self) -> None:  # noqa: N802 (name fixed by http.server)
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        authorization = self.headers.get("Authorization")
        self.hub._record(Request(self.command, self.path, authorization))
        status, headers, served = self.hub._route(self.path, authorization)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(served.size if served else 0))
        self.end_headers()
        if send_body and served is not None:
            self.wfile.write(served.path.read_bytes())

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""
