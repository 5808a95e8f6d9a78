"""Prometheus metrics on a per-app CollectorRegistry (several apps in one process never clash)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Requests and latency per route, batch sizes, queue time, unhandled exceptions (a bug each: every bad
    request must get its own 4xx); index size and model per collection."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "embed_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "embed_http_request_duration_seconds",
            "Request latency by route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "embed_batch_size", "Items per encoder call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_time = Histogram(
            "embed_queue_seconds", "Time a request waited for the encoder.", buckets=QUEUE_BUCKETS, registry=r
        )
        self.queue_items = Gauge("embed_queue_items", "Items waiting for the encoder.", registry=r)
        self.collection_requests = Counter(
            "embed_collection_requests",
            "Requests served by each collection's item routes (existing collections only).",
            ["collection"],
            registry=r,
        )
        self.unhandled_exceptions = Counter(
            "embed_unhandled_exceptions",
            "Exceptions no handler answered (each became a bare 500; the log names the route).",
            registry=r,
        )

    def observe_batch(self, size: int, waits: list[float]) -> None:
        self.batch_size.observe(size)
        for wait in waits:
            self.queue_time.observe(wait)

    def bind(
        self, queue_items: Callable[[], float], collections: Callable[[], list[CollectionStats]]
    ) -> None:
        """Gauges read live values at scrape time."""
        self.queue_items.set_function(queue_items)
        self.registry.register(_CollectionsCollector(collections))


@dataclass(frozen=True, slots=True)
class CollectionStats:
    name: str
    model_id: str | None
    index_size: int
    index_type: str | None
    recall: float | None  # sampled recall@10 of an approximate index


class _CollectionsCollector(Collector):
    """Per-collection gauges (label ``collection``), read from the live catalogues at scrape time."""

    def __init__(self, read: Callable[[], list[CollectionStats]]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        size = GaugeMetricFamily(
            "embed_index_size", "Vectors in a collection's index.", labels=["collection"]
        )
        model = GaugeMetricFamily(
            "embed_active_model",
            "1 for each collection's active model.",
            labels=["collection", "model_id", "index_type"],
        )
        recall = GaugeMetricFamily(
            "embed_index_recall",
            "Sampled recall@10 of a collection's approximate index against exact search.",
            labels=["collection"],
        )
        for stats in self.read():
            size.add_metric([stats.name], stats.index_size)
            if stats.recall is not None:
                recall.add_metric([stats.name], stats.recall)
            if stats.model_id is not None:
                model.add_metric([stats.name, stats.model_id, stats.index_type or ""], 1)
        yield size
        yield model
        yield recall


def _route_template(scope: Scope) -> str:
    """The matched route's template with the prefix it was included under (``/collections/{name}/embed``),
    never the raw path, so labels stay bounded."""
    context = scope.get("fastapi", {}).get("effective_route_context")
    if context is not None:
        return str(context.path)
    return str(getattr(scope.get("route"), "path", "other"))


class MetricsMiddleware:
    """Counts and times every request under its route template (never the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:  # every handled error is a response by now: whatever arrives here is a bug
            self.metrics.unhandled_exceptions.inc()
            raise  # on to the catch-all handler (a bare 500) and the server's log
        finally:
            key = (scope["method"], _route_template(scope), status)
            children = self._children.get(key)
            if children is None:  # resolving label children costs more than the update itself
                method, route, code = key
                children = (
                    self.metrics.requests.labels(method, route, str(code)),
                    self.metrics.latency.labels(method, route),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
