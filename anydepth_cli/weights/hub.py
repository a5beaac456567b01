"""Model weights from the Hugging Face Hub, kept in the standard Hugging Face cache.

huggingface_hub reads HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_ETAG_TIMEOUT
once, when it is imported. Every function here reads them from the environment at call time
instead and hands them to the library explicitly, so the settings in effect are always the
current ones.

When a file is not cached and the Hub cannot be reached, hf_hub_download retries with backoff
for about 25 seconds (its retry count and waits are not configurable) before it fails. A file
that is not cached is therefore first asked about with one metadata request, which the library
does not retry, so an unreachable Hub is reported within HF_HUB_ETAG_TIMEOUT seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx2

from anydepth_cli.errors import HubError

try:  # huggingface_hub parses its integer settings on import and fails with a traceback
    from huggingface_hub import (
        CacheNotFound,
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        scan_cache_dir,
        try_to_load_from_cache,
    )
    from huggingface_hub.errors import (
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
except ValueError as exc:
    raise HubError(f"HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT must be whole numbers of seconds ({exc})") from exc

_DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
_LOCAL_WEIGHTS_HINT = "or pass --checkpoint FILE --arch FILE.json to use local weights"
_DEFAULT_ETAG_TIMEOUT = 4


def cache_dir() -> Path:
    """The Hugging Face hub cache folder currently in effect."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    hf_home = os.environ.get("HF_HOME")
    if hf_home:
        return Path(os.path.expandvars(hf_home)).expanduser() / "hub"
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.path.expandvars(xdg_cache)).expanduser() / "huggingface" / "hub"


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", _DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """Whether HF_HUB_OFFLINE asks for cache-only operation."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE_VALUES


def _etag_timeout() -> int:
    """Seconds to wait for the Hub to answer a metadata request: HF_HUB_ETAG_TIMEOUT, else 4."""
    text = os.environ.get("HF_HUB_ETAG_TIMEOUT", "").strip()
    if not text:
        return _DEFAULT_ETAG_TIMEOUT
    if not text.isdigit() or int(text) == 0:
        raise HubError(f"HF_HUB_ETAG_TIMEOUT must be a whole number of seconds above 0, not {text!r}")
    return int(text)


def download(repo_id: str, filename: str, revision: str | None = None, model: str | None = None) -> Path:
    """Path of `filename` from Hub repo `repo_id` in the local cache, downloaded first if needed.

    Honours HF_HOME/HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT and HF_HUB_ETAG_TIMEOUT as
    set at call time. Raises HubError when the file is neither cached nor downloadable; `model`,
    the registry name the file belongs to, if any, goes into the `anydepth models download` hint.
    """
    endpoint = _endpoint()
    offline = offline_mode()
    try:
        timeout = _etag_timeout()
        if not offline and _cached(repo_id, filename, revision) is None:
            url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
            get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint)
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir(),
                endpoint=endpoint,
                local_files_only=offline,
                etag_timeout=timeout,
            )
        )
    except HFValidationError as exc:
        raise HubError(f"invalid Hub repository id or file name {repo_id!r}/{filename!r}: {_first_line(exc)}") from exc
    except (HfHubHTTPError, LocalEntryNotFoundError, httpx2.TransportError) as exc:
        raise HubError(_describe(exc, repo_id, filename, revision, endpoint, offline, model)) from exc


def _describe(
    exc: Exception, repo_id: str, filename: str, revision: str | None, endpoint: str, offline: bool, model: str | None
) -> str:
    """One line telling the user what went wrong and what to do about it."""
    at_revision = f" at revision {revision!r}" if revision else ""
    what = f"model {model} ({repo_id}/{filename}{at_revision})" if model else f"{repo_id}/{filename}{at_revision}"
    if isinstance(exc, GatedRepoError):
        return (
            f"{repo_id} is a gated repository: accept its terms on {endpoint}/{repo_id} and set HF_TOKEN "
            f"to a token of that account, {_LOCAL_WEIGHTS_HINT}"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"repository {repo_id} was not found on {endpoint} (if it is private, set HF_TOKEN), "
            f"{_LOCAL_WEIGHTS_HINT}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"revision {revision!r} does not exist in {repo_id} on {endpoint}"
    if isinstance(exc, RemoteEntryNotFoundError):
        return f"file {filename} does not exist in {repo_id}{at_revision} on {endpoint}"
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code
        if status == 401:
            return f"{endpoint} rejected the credentials (HTTP 401): check or unset HF_TOKEN"
        return f"{endpoint} answered HTTP {status} for {repo_id}/{filename}{at_revision}: try again later"
    cause = exc.__cause__
    if offline or isinstance(cause, OfflineModeIsEnabled):
        fetch = f"run `anydepth models download {model}` while online" if model else "unset it to download the file"
        return f"{what} is not in the cache and offline mode is on (HF_HUB_OFFLINE): {fetch}, {_LOCAL_WEIGHTS_HINT}"
    if isinstance(cause, FileMetadataError):
        return (
            f"{endpoint} does not answer like a Hugging Face Hub (check HF_ENDPOINT and proxy settings) and "
            f"{repo_id}/{filename} is not cached, {_LOCAL_WEIGHTS_HINT}"
        )
    if isinstance(cause, HfHubHTTPError):
        return (
            f"{endpoint} answered HTTP {cause.response.status_code} and {repo_id}/{filename} is not cached: "
            f"try again later, {_LOCAL_WEIGHTS_HINT}"
        )
    fetch = f", run `anydepth models download {model}` once online" if model else ""
    return (
        f"cannot reach {endpoint} to download {what} and it is not cached: "
        f"check your connection (and HF_ENDPOINT){fetch}, {_LOCAL_WEIGHTS_HINT}"
    )


def _first_line(exc: Exception) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def cached_path(repo_id: str, filename: str) -> Path | None:
    """The cached copy of `filename` from `repo_id` (its main revision), or None if it is not cached."""
    return _cached(repo_id, filename, None)


def _cached(repo_id: str, filename: str, revision: str | None) -> Path | None:
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def remove_cached(repo_id: str, filename: str) -> int:
    """Delete every cached copy of `filename` from `repo_id`; returns the number of bytes freed."""
    try:
        cache = scan_cache_dir(cache_dir())
    except CacheNotFound:
        return 0
    files = [
        cached_file
        for repo in cache.repos
        if repo.repo_type == "model" and repo.repo_id == repo_id
        for revision in repo.revisions
        for cached_file in revision.files
        if cached_file.file_path.relative_to(revision.snapshot_path).as_posix() == filename
    ]
    if not files:
        return 0
    strategy = cache.delete_files(*files)
    strategy.execute()
    return strategy.expected_freed_size
