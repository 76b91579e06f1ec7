"""The service's Prometheus metrics (prometheus_client, one registry per app): requests by route and
status, latency, predictor batch sizes, queue depth and tokens embedded; and the ASGI middleware that
counts every request, errors included."""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """What /metrics shows; `queue_depth` reads the batcher's queue when scraped."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("embedding_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("embedding_request_duration_seconds", "time from request to response, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("embedding_batch_size", "texts (or windows) per predictor call",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("embedding_queue_depth", "texts waiting for a predictor", registry=self.registry)
        self.tokens = Counter("embedding_tokens", "tokens embedded, <cls>/<sep> included, by route", ["route"],
                              registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no response buffering): counts each HTTP request by route and status and times it.
    Paths that are not routes share the label "other", so clients cannot grow the label set."""

    def __init__(self, app, metrics: ServiceMetrics, routes: frozenset[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
