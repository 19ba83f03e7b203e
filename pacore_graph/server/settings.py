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

DEFAULT_PORT = 8100
DEFAULT_MAX_RUNS = 16
"""Runs at once before a request gets 429: 16 runs of ``pacore-high`` keep 512 trajectories
in flight, more than one vLLM replica decodes at full speed."""
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
"""8 MiB: a chat of ~1M characters (the library's own input bound, ~330k tokens, 2.5x the
paper model's context) JSON-escaped, or a few images as data URLs. Each of a round's K calls
holds the chat, so the body bounds the run's memory too."""
DEFAULT_MAX_TRAJECTORIES = 4096
"""Trajectories one request may ask for (the sum of its round vector, times ``n``)."""
DEFAULT_MAX_N = 8
DEFAULT_KEEPALIVE_S = 15.0
"""Seconds between SSE comments while nothing else is sent: under the 60 s idle timeout of
nginx and of common cloud load balancers."""
DEFAULT_RETRY_AFTER_S = 5
DEFAULT_GRACE_S = 5.0
DEFAULT_THREAD_TTL_S = 7 * 86400.0
"""A week: a client retries within minutes or hours; Redis must not grow without end."""

MAX_RUNS_ENV = "PACORE_SERVE_MAX_RUNS"
REDIS_URL_ENV = "REDIS_URL"


@dataclass
class ServeSettings:
    """How the server behaves; the PaCoRe defaults of its runs are the graph's."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    """Incoming keys; empty: no authentication."""
    redis_url: str | None = None
    """Checkpoint runs that carry an ``Idempotency-Key`` in Redis (durable, resumable)."""
    thread_ttl_s: Annotated[float | None, Field(gt=0)] = DEFAULT_THREAD_TTL_S
    """Seconds a durable run's thread stays in Redis after its last write (None: forever)."""
    saver_options: dict[str, Any] = field(default_factory=dict)
    """More `AsyncRedisSaver.from_conn_string` arguments (e.g. a lease TTL)."""
    max_runs: Annotated[int, Field(ge=1)] = DEFAULT_MAX_RUNS
    """Runs at once (a request with ``n`` choices is ``n`` runs); beyond it 429."""
    concurrency: Annotated[int | None, Field(ge=1)] = 64
    """Per-run bound on model calls in flight (LangGraph's ``max_concurrency``); the bound
    over all runs is the model's ``max_concurrent_requests``."""
    max_body_bytes: Annotated[int, Field(ge=1)] = DEFAULT_MAX_BODY_BYTES
    max_trajectories: Annotated[int, Field(ge=1)] = DEFAULT_MAX_TRAJECTORIES
    max_n: Annotated[int, Field(ge=1)] = DEFAULT_MAX_N
    keepalive_s: Annotated[float, Field(gt=0)] = DEFAULT_KEEPALIVE_S
    retry_after_s: Annotated[int, Field(ge=0)] = DEFAULT_RETRY_AFTER_S
    cancel_on_disconnect: bool = False
    """Cancel a run when its last client hangs up (default: it runs on in the background)."""
    finished_ttl_s: Annotated[float, Field(ge=0)] = 300.0
    """Without Redis: how long a finished run's answer stays for a retry of its key."""
    grace_s: Annotated[float, Field(ge=0)] = DEFAULT_GRACE_S
    """At shutdown: seconds open streams get to end before runs are cancelled."""
    freeze_gc: bool = False
    """Once started, move everything alive (imports, app, graph) out of the cyclic garbage
    collector's reach (`gc.freeze`): the server process holds so many long-lived objects
    that each full collection paused it ~0.25 s, between rounds of every run."""
    secrets: list[str] = field(default_factory=list)
    """Values no error message or log line may show (upstream key, Redis password)."""

    def __post_init__(self) -> None:
        """Raises `InvalidSettingsError` naming the first field out of its bounds."""
        _CHECK.check_instance(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServeSettings:
        """Settings of the OpenAI routes inside LangGraph's server (``langgraph dev``):
        ``$PACORE_SERVE_API_KEYS``, ``$REDIS_URL`` and ``$PACORE_SERVE_MAX_RUNS``."""
        runs = environ.get(MAX_RUNS_ENV, "").strip()
        return cls(
            api_keys=ApiKeys.parse(environ.get(KEYS_ENV, "")),
            redis_url=environ.get(REDIS_URL_ENV) or None,
            max_runs=int(runs) if runs else DEFAULT_MAX_RUNS,
        )


_CHECK = SettingsCheck(ServeSettings)

__all__ = ["ServeSettings"]
