"""PaCoRe for LangGraph Studio and ``langgraph dev``: graph id ``pacore`` in ``langgraph.json``.

Environment:
    PACORE_BASE_URL: The OpenAI-compatible endpoint (for replicas, their router); required.
    PACORE_MODEL: Model name; defaults to the endpoint's first ``/v1/models`` entry.
    OPENAI_API_KEY: API key sent to the endpoint (default ``EMPTY``).
    PACORE_ROUNDS: Default round spec (``low``, ``medium``, ``high``, ``8``, ``32,4``);
        a run's context form overrides it.
    REDIS_URL: When set, threads are checkpointed in Redis with `AsyncRedisSaver`;
        otherwise the dev server's own persistence is used.

Example:
    ```bash
    PACORE_BASE_URL=http://127.0.0.1:8000/v1 langgraph dev
    ```
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph.backends.env import endpoint_model_from_env
from pacore_graph.backends.openai_compat import ChatOpenAICompatible
from pacore_graph.graph import create_pacore_graph

REDIS_URL_ENV = "REDIS_URL"
"""Not ``REDIS_URI``: ``langgraph dev`` overwrites that one with a placeholder ("fake")."""


def _model_from_env() -> ChatOpenAICompatible:
    # PACORE_BASE_URL is required for Studio: the server builds the graph at startup.
    model = endpoint_model_from_env()
    if model is None:
        raise RuntimeError(
            "PACORE_BASE_URL is not set: point it at an OpenAI-compatible endpoint, e.g. "
            "PACORE_BASE_URL=http://127.0.0.1:8000/v1 langgraph dev"
        )
    return model


# Compiled without a checkpointer: the server supplies one (`checkpointer` below).
graph = create_pacore_graph(
    _model_from_env(), rounds=os.environ.get("PACORE_ROUNDS") or "low"
).compile(name="pacore")


def _server_default_saver() -> BaseCheckpointSaver:
    """The saver the server would use without a ``checkpointer.path``.

    Under ``langgraph dev`` that is the in-memory saver it pickles to ``.langgraph_api/``,
    so threads and their checkpoints survive a restart together.
    """
    try:
        # `langgraph_runtime` raises ValueError when imported outside the server.
        from langgraph_runtime.checkpoint import Checkpointer
    except (ImportError, ValueError):
        return InMemorySaver()
    return Checkpointer()


@contextlib.asynccontextmanager
async def checkpointer() -> AsyncIterator[BaseCheckpointSaver]:
    """The server's checkpointer (``checkpointer.path`` in ``langgraph.json``).

    langgraph-api enters this once per event loop and closes it at shutdown, so the Redis
    connection pool lives on the loop that uses it. ``langgraph.json`` cannot be conditional,
    so without ``$REDIS_URL`` this hands back the saver the server would have used anyway.

    Yields:
        `AsyncRedisSaver` on ``$REDIS_URL`` when that is set, else the server's default saver.
    """
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        yield _server_default_saver()
        return
    from pacore_graph.checkpoints import AsyncRedisSaver

    async with AsyncRedisSaver.from_conn_string(url) as saver:
        yield saver


__all__ = ["checkpointer", "graph"]
