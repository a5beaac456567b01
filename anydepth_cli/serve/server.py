"""Running `anydepth serve`: the app under uvicorn until SIGTERM or Ctrl+C, after which the requests already
accepted are answered and the process exits 0."""

from __future__ import annotations

import ipaddress
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from anydepth_cli.errors import UsageError
from anydepth_cli.serve.app import Limits, create_app
from anydepth_cli.serve.gallery import Gallery
from anydepth_cli.serve.metrics import Metrics
from anydepth_cli.serve.model import Batching, ServedModel

if TYPE_CHECKING:
    from anydepth_cli.inference.predictor import BatchedPredictor


@dataclass(frozen=True)
class ServeOptions:
    """Where to listen, who may ask, and how requests are batched and limited."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    batching: Batching = Batching()
    limits: Limits = Limits()
    max_pixels: int = 120_000_000
    gallery: Path | None = None


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(options: ServeOptions) -> None:
    """Refuse a bind beyond loopback without a token, and settings out of range."""
    if not is_loopback(options.host) and not options.token:
        raise UsageError(f"--host {options.host} is reachable from other machines: set --token (or ANYDEPTH_TOKEN)")
    batching = options.batching
    if batching.max_batch < 1 or batching.queue < 1 or batching.max_wait < 0:
        raise UsageError("--max-batch and --queue must be at least 1, --max-wait-ms at least 0")
    if not 0 <= options.port <= 65535:
        raise UsageError("--port must be in 0..65535")
    if options.max_pixels < 1:
        raise UsageError("--max-pixels must be positive")


def serve(options: ServeOptions, opener: Callable[[], tuple[BatchedPredictor, str]],
          announce: Callable[[str], None]) -> None:
    """Serve until SIGTERM or Ctrl+C; raises the error that stopped the model from loading, if one did."""
    import uvicorn

    check_options(options)
    gallery = Gallery(options.gallery) if options.gallery is not None else None
    metrics = Metrics(options.batching.max_batch)
    model = ServedModel(opener, options.batching, options.max_pixels, metrics.batch_size.observe)
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(model, metrics, options.token, gallery, options.limits, stop)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning", access_log=False,
                            lifespan="on", server_header=False)
    server = uvicorn.Server(config)
    # uvicorn takes SIGINT and SIGTERM while it runs and sends them again once it has drained; these keep that
    # second signal from ending the process with a signal status instead of 0.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: None)
    host = f"[{options.host}]" if ":" in options.host else options.host
    announce(f"serving on http://{host}:{options.port}; /readyz answers 200 once the model is warm")
    server.run()
    if model.error is not None:
        raise model.error
