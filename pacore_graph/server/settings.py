"""What a `pacore serve` process is configured with, from its command line or (under
LangGraph's server) from its environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from pacore_graph.server.auth import KEYS_ENV, ApiKeys
from pacore_graph.validation import SettingsCheck


@dataclass
class ServeSettings:
    """How the server behaves; the PaCoRe defaults of its runs are the graph's."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8100
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    """Incoming keys; empty: no authentication."""
    redis_url: str | None = None
    """Checkpoint runs that carry an ``Idempotency-Key`` in Redis (durable, resumable)."""
    thread_ttl_s: Annotated[float | None, Field(gt=0)] = 7 * 86400.0
    """Seconds a durable run's thread stays in Redis after its last write (None: forever)."""
    saver_options: dict[str, Any] = field(default_factory=dict)
    """More `AsyncRedisSaver.from_conn_string` arguments (e.g. a lease TTL)."""
    max_runs: Annotated[int, Field(ge=1)] = 16
    """Runs at once (a request with ``n`` choices is ``n`` runs); beyond it 429."""
    concurrency: Annotated[int | None, Field(ge=1)] = 64
    """Per-run bound on model calls in flight (LangGraph's ``max_concurrency``)."""
    max_body_bytes: Annotated[int, Field(ge=1)] = 8 * 2**20  # max_input_chars escaped, or images
    max_trajectories: Annotated[int, Field(ge=1)] = 4096  # of a request: its vector's sum x n
    max_n: Annotated[int, Field(ge=1)] = 8
    keepalive_s: Annotated[float, Field(gt=0)] = 15.0  # under nginx's 60 s idle timeout
    retry_after_s: Annotated[int, Field(ge=0)] = 5
    cancel_on_disconnect: bool = False
    """Cancel a run when its last client hangs up (default: it runs on in the background)."""
    finished_ttl_s: Annotated[float, Field(ge=0)] = 300.0
    """Without Redis: how long a finished run's answer stays for a retry of its key."""
    grace_s: Annotated[float, Field(ge=0)] = 5.0
    """At shutdown: seconds open streams get to end before runs are cancelled."""
    freeze_gc: bool = False
    """Once started, tune the process's collector (`tune_collector`): for a process that is
    the server's alone."""
    secrets: list[str] = field(default_factory=list)
    """Values no error message or log line may show (upstream key, Redis password)."""

    def __post_init__(self) -> None:
        """Raises `InvalidSettingsError` naming the first field out of its bounds."""
        _CHECK.check_instance(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServeSettings:
        """Settings of the OpenAI routes inside LangGraph's server (``langgraph dev``):
        ``$PACORE_SERVE_API_KEYS``, ``$REDIS_URL`` and ``$PACORE_SERVE_MAX_RUNS``."""
        runs = environ.get("PACORE_SERVE_MAX_RUNS", "").strip()
        return cls(
            api_keys=ApiKeys.parse(environ.get(KEYS_ENV, "")),
            redis_url=environ.get("REDIS_URL") or None,
            max_runs=int(runs) if runs else cls.max_runs,
        )


_CHECK = SettingsCheck(ServeSettings)

__all__ = ["ServeSettings"]
