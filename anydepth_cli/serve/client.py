"""`anydepth predict --server URL`: a predictor whose network runs in a running `anydepth serve`, so that a predict
run skips the model load and writes, byte for byte, the files of a local run with the server's model.

Each image goes out as a lossless PNG of its decoded pixels with `tile=off`: the run decides tiling itself, exactly
as a local run does, and the server returns the float32 map of exactly that image. Only the standard library is
used, so no extra is needed on the client.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image

from anydepth_cli.errors import InputError, UsageError

RETRIES = 20
"""How often a request refused with 503 (queue full) is sent again, after the server's Retry-After."""
TIMEOUT = 300.0


class RemotePredictor:
    """A MapPredictor whose `predict_batch` asks a running server, one request per image, all at once."""

    def __init__(self, url: str, token: str | None, batch_size: int) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.batch_size = batch_size
        card = json.loads(self._send("GET", "/v1/models")[0])["models"][0]
        self.name: str = card["name"]
        self.output_kind: str = card["output"]
        self.input_size: int = card["input_size"]
        self.max_depth: float | None = card.get("max_depth")
        import torch

        self.device = torch.device("cpu")
        """Where the run's own work happens (tiling, colouring): here, whatever device the server runs on."""
        self._pool = ThreadPoolExecutor(max(1, batch_size), thread_name_prefix="anydepth-remote")

    def predict_batch(self, images: Sequence[np.ndarray],
                      sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """Each image's map from the server, at the image's own size."""
        if sizes is not None and any(tuple(size) != image.shape[:2] for size, image in zip(sizes, images)):
            raise UsageError("--server returns maps at the image's own size only")
        return list(self._pool.map(self._predict, images))

    def _predict(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        body = io.BytesIO()
        Image.fromarray(image).save(body, format="PNG", compress_level=1)
        content, _ = self._send("POST", "/v1/depth?format=npy&tile=off", body.getvalue())
        return np.load(io.BytesIO(content))

    def _send(self, method: str, path: str, body: bytes | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a 200 answer; 503s are retried, other answers raised as our errors."""
        headers = {"Content-Type": "application/octet-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for _ in range(RETRIES):
            request = urllib.request.Request(self.url + path, body, headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                    return answer.read(), dict(answer.headers)
            except urllib.error.HTTPError as exc:
                if exc.code != 503:
                    raise _error(exc) from None
                time.sleep(float(exc.headers.get("Retry-After") or 1))
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise UsageError(f"cannot reach the server at {self.url}: {reason}") from None
        raise InputError(f"the server at {self.url} stayed busy (503) {RETRIES} times")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error(exc: urllib.error.HTTPError) -> UsageError | InputError:
    """Our error for a server's answer: the request's fault fails one photo, the others the run."""
    try:
        message = json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError, OSError):
        message = exc.reason
    if exc.code in (413, 415, 422, 504):
        return InputError(f"the server answered {exc.code}: {message}")
    if exc.code == 401:
        return UsageError("the server refused the token: pass --token (or set ANYDEPTH_TOKEN)")
    return UsageError(f"the server answered {exc.code}: {message}")


def open_remote(url: str, token: str | None, batch_size: int, local_only: Sequence[str]) -> tuple[RemotePredictor, str]:
    """The predictor of the server at `url` and a label naming its model; `local_only`: options given that only
    apply to a local run (refused)."""
    if local_only:
        raise UsageError(f"--server runs the server's model: drop {', '.join(local_only)}")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise UsageError(f"--server expects an http:// or https:// URL, not {url!r}")
    predictor = RemotePredictor(url, token, batch_size)
    return predictor, f"{predictor.name} at {predictor.url}"
