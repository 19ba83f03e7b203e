"""Prometheus metrics of one server (``GET /metrics``, listed in docs/serve.md), in a
registry of its own so that several apps in one process do not collide."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

RUN_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, float("inf"))
"""PaCoRe runs last from seconds (a small model) to hours (K=[32,4] of 64k-token calls)."""


class Metrics:
    """The server's metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.runs_in_flight = Gauge("pacore_runs_in_flight", "Runs executing now", registry=r)
        self.runs = Counter("pacore_runs", "Runs ended, by outcome", ["outcome"], registry=r)
        self.run_seconds = Histogram(
            "pacore_run_seconds", "Wall time of a run", buckets=RUN_SECONDS_BUCKETS, registry=r
        )
        self.requests = Counter(
            "pacore_requests", "Chat completion requests, by HTTP status", ["code"], registry=r
        )
        self.trajectories = Counter(
            "pacore_trajectories", "Trajectories ended, by status", ["status"], registry=r
        )
        self.completion_tokens = Counter(
            "pacore_completion_tokens", "Completion tokens of finished trajectories", registry=r
        )
        self.upstream_errors = Counter(
            "pacore_upstream_errors", "Model calls that failed (each retry counts)", registry=r
        )
        # Children made once: labels() looks its child up under a lock on every call.
        self._ended = {
            f"trajectory_{s}": self.trajectories.labels(s)
            for s in ("finished", "failed", "stopped")
        }
        self.watcher = UpstreamErrors(self)

    def on_event(self, event: Any) -> None:
        """Counts a run's progress event (``stream_mode="custom"``)."""
        kind = event.get("type") if isinstance(event, dict) else None
        if kind in self._ended:
            self._ended[kind].inc()
        if kind == "trajectory_finished":
            self.completion_tokens.inc(event.get("completion_tokens") or 0)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class UpstreamErrors(BaseCallbackHandler):
    """Counts every model call that raised, retries included."""

    run_inline = True  # on the event loop: a counter needs no worker thread
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_custom_event = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.metrics.upstream_errors.inc()


__all__ = ["Metrics", "UpstreamErrors"]
