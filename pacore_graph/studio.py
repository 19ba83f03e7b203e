"""PaCoRe for LangGraph Studio and ``langgraph dev`` (docs/studio.md): ``langgraph.json``
names the graph factory `make_graph`, the `checkpointer`, and `app`, whose lifespan runs
the model's backend with the server and which serves the OpenAI-compatible ``/v1`` routes
on the same graph. Importing the module starts nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any, NoReturn
from urllib.parse import urlsplit

import openai
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.pregel import Pregel
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.routing import Mount

from pacore_graph._compat import expose_errors
from pacore_graph.backends.embedded import EmbeddedBackendUnavailable
from pacore_graph.backends.launch import (
    BASE_URL_ENV,
    EMBEDDED_MAX_TOKENS,
    endpoint_from_env,
    model_from_env,
)
from pacore_graph.checkpoints import FullInMemorySaver
from pacore_graph.errors import InvalidRoundsError, PaCoReError
from pacore_graph.graph import create_pacore_graph
from pacore_graph.secrets import redact
from pacore_graph.server.app import Service, v1_routes
from pacore_graph.server.settings import ServeSettings

logger = logging.getLogger(__name__)

REDIS_URL_ENV = "REDIS_URL"  # not REDIS_URI, which `langgraph dev` overwrites
ROUNDS_ENV = "PACORE_ROUNDS"

StudioGraph = Pregel[Any, Any, Any, Any]

STARTUP_ERRORS = (PaCoReError, EmbeddedBackendUnavailable, openai.OpenAIError, OSError, ValueError)
"""What a wrong environment raises while the backend starts (anything else is a bug)."""
STARTUP_EXIT_STATUS = 2


class _Backend:
    """The model the Studio graph runs on, started at most once per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # langgraph-api asks for the graph from several loops
        self._stack: contextlib.ExitStack | None = None
        self.graph: StudioGraph | None = None

    def start(self) -> StudioGraph:
        """Starts the backend (blocking; a no-op when it runs); returns the graph on it."""
        with self._lock:
            if self.graph is not None:
                return self.graph
            with contextlib.ExitStack() as stack:
                model = stack.enter_context(model_from_env(check=True))
                graph = create_pacore_graph(
                    model,
                    rounds=os.environ.get(ROUNDS_ENV) or "low",
                    # The tiny CPU model is slow: short calls, as in `pacore solve`.
                    max_tokens=None if endpoint_from_env() else EMBEDDED_MAX_TOKENS,
                ).compile(name="pacore")
                # The server streams the output keys only: Studio sees each trajectory, each
                # round's references, as an in-process stream does (not only messages, pacore).
                graph.output_channels = graph.stream_channels_list
                self._stack = stack.pop_all()  # started: keep it running past this block
            where = redact(model.openai_api_base or "", _secrets())
            kind = "the embedded model" if endpoint_from_env() is None else BASE_URL_ENV
            logger.info("PaCoRe graph on %s at %s (%s)", model.model_name, where, kind)
            self.graph = graph
            return graph

    def stop(self) -> None:
        """Stops the backend; a no-op when stopped."""
        with self._lock:
            stack, self._stack, self.graph = self._stack, None, None
        if stack is not None:
            stack.close()


_BACKEND = _Backend()


async def make_graph() -> StudioGraph:
    """The graph factory of ``langgraph.json``: the one graph on this process's backend."""
    if (graph := _BACKEND.graph) is not None:
        return graph
    return await asyncio.to_thread(_BACKEND.start)


def _secrets() -> list[str]:
    """The API key and a password in the endpoint or Redis URL."""
    found = [os.environ.get("OPENAI_API_KEY", "")]
    for url in (endpoint_from_env, lambda: os.environ.get(REDIS_URL_ENV)):
        with contextlib.suppress(ValueError):
            found.append(urlsplit(url() or "").password or "")
    return [secret for secret in found if secret]


def startup_failure(exc: BaseException) -> str:
    """The one line that reports why the backend could not start, without secrets."""
    if isinstance(exc, openai.APIStatusError):
        text = f"the model endpoint answered {exc.status_code}: {exc.message}"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, InvalidRoundsError):
        where = ROUNDS_ENV
    elif isinstance(exc, RedisError):
        where = REDIS_URL_ENV
    elif endpoint_from_env() is not None:
        where = BASE_URL_ENV
    else:
        where = f"the embedded model ({BASE_URL_ENV} is unset)"
    return redact(f"pacore studio: {where}: {text}", _secrets())


def _fail(exc: BaseException) -> NoReturn:
    """Ends the server with one line on stderr (raising would print a traceback, and
    ``langgraph dev``'s reloader would wait for a file change)."""
    _BACKEND.stop()
    sys.stdout.flush()
    print(startup_failure(exc), file=sys.stderr, flush=True)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        # We are the server process of uvicorn's reloader, which exits 0 on SIGTERM.
        os.kill(parent.pid, signal.SIGKILL)
    _exit(STARTUP_EXIT_STATUS)


def _exit(status: int) -> NoReturn:
    # Not sys.exit: SystemExit in a lifespan is reported with a traceback too.
    os._exit(status)


SERVICE = Service(ServeSettings.from_env, lambda: _BACKEND.graph)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Starts the backend and the ``/v1`` service with the server (before it serves), or
    ends it with one line; stops them at shutdown."""
    expose_errors(PaCoReError)  # the client gets the message, not only the server's log
    async with contextlib.AsyncExitStack() as stack:
        try:
            await asyncio.to_thread(_BACKEND.start)
            stack.push_async_callback(asyncio.to_thread, _BACKEND.stop)
            await stack.enter_async_context(SERVICE.running())
        except STARTUP_ERRORS as exc:
            _fail(exc)
        yield


app = Starlette(lifespan=lifespan, routes=[Mount("/v1", routes=v1_routes(SERVICE))])
"""``http.app`` of ``langgraph.json``."""


@contextlib.asynccontextmanager
async def checkpointer() -> AsyncIterator[BaseCheckpointSaver]:
    """``checkpointer.path`` of ``langgraph.json``: `AsyncRedisSaver` on ``$REDIS_URL`` when
    set, else the saver the server would use without one, its in-memory saver given what
    langgraph-api expects of a custom one (`FullInMemorySaver`). Entered once per event
    loop, so the Redis pool lives on the loop that uses it."""
    if url := os.environ.get(REDIS_URL_ENV):
        from pacore_graph.checkpoints import AsyncRedisSaver

        async with AsyncRedisSaver.from_conn_string(url) as saver:
            yield saver
        return
    try:
        # `langgraph_runtime` raises ValueError when imported outside the server.
        from langgraph_runtime.checkpoint import Checkpointer
    except (ImportError, ValueError):
        default: BaseCheckpointSaver = InMemorySaver()
    else:
        default = Checkpointer()
    yield FullInMemorySaver(default) if isinstance(default, InMemorySaver) else default
