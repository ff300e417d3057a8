"""Prometheus metrics of one app (its own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """requests / errors by route and status, queue depth, tokens and tokens/s, latency histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], int], busy: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("internvl_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.errors = Counter(
            "internvl_errors", "HTTP requests answered with an error (status >= 400)", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "internvl_request_latency_seconds",
            "Request latency (to the last byte for streams)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "internvl_time_to_first_token_seconds",
            "Streamed chat: time to the first piece",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "internvl_batch_size", "Requests per model call", ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.batch_seconds = Histogram(
            "internvl_batch_seconds", "Seconds per model call", ["kind"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("internvl_generated_tokens", "Completion tokens generated", registry=r)
        self.prompt_tokens = Counter("internvl_prompt_tokens", "Prompt tokens processed", registry=r)
        self.tokens_per_second = Gauge(
            "internvl_tokens_per_second", "Generated tokens/s of the last model call", registry=r
        )
        self.cancelled = Counter("internvl_cancelled", "Requests whose client went away before the answer", registry=r)
        depth = Gauge("internvl_queue_depth", "Jobs waiting for the model worker", registry=r)
        depth.set_function(lambda: float(queue_depth()))
        running = Gauge("internvl_running", "Jobs in the model call now running", registry=r)
        running.set_function(lambda: float(busy()))

    def on_batch(self, kind: str, size: int, seconds: float, tokens: int) -> None:
        self.batch_size.labels(kind).observe(size)
        self.batch_seconds.labels(kind).observe(seconds)
        if tokens:
            self.tokens.inc(tokens)
            self.tokens_per_second.set(tokens / max(seconds, 1e-9))

    def render(self) -> bytes:
        return generate_latest(self.registry)
