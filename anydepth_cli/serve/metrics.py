"""Prometheus metrics of `anydepth serve`: requests by endpoint and status, latency, batch sizes, queue depth."""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENDPOINTS = frozenset({"/", "/v1/depth", "/v1/pointcloud", "/v1/models", "/v1/gallery", "/healthz", "/readyz",
                       "/metrics", "/docs", "/openapi.json"})
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The server's own registry of metrics (never the process-global one)."""

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("anydepth_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("anydepth_request_seconds", "Time from a request's arrival to its answer",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("anydepth_batch_size", "Images in each batch the network ran",
                                    buckets=tuple(range(1, max_batch + 1)), registry=self.registry)
        self.queue_depth = Gauge("anydepth_queue_depth", "Requests in the engine: queued, decoding, running or "
                                 "encoding", registry=self.registry)

    def instrument(self, app: ASGIApp, queue_depth: Callable[[], int]) -> None:
        """Count and time every request `app` answers; read the queue depth from `queue_depth` when scraped."""
        self.queue_depth.set_function(queue_depth)
        app.add_middleware(_Timing, metrics=self)

    def observe(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "/static" if path.startswith("/static/") else "other"
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Timing:
    """ASGI middleware: the status and duration of each HTTP request into `Metrics`; a request whose client left
    before an answer was sent counts as 499, one that raised as 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 499

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        except Exception:  # answered 500 by Starlette's outermost middleware
            status = 500
            raise
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - start)
