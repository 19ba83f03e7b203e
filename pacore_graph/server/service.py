"""`Service`: what the server's routes (``/v1`` and ``/mcp``) share."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from langgraph.pregel import Pregel

from pacore_graph.collector import tune_collector
from pacore_graph.context import PaCoReContext
from pacore_graph.server.auth import AuthError
from pacore_graph.server.errors import ApiError
from pacore_graph.server.metrics import Metrics
from pacore_graph.server.runs import Runs
from pacore_graph.server.settings import ServeSettings

Graph = Pregel[Any, Any, Any, Any]


class Service:
    """What the routes share. Nothing starts until `running` (the app's lifespan).

    Args:
        settings: The server's settings, or a function giving them at start-up.
        graph: The compiled PaCoRe graph without a checkpointer (one on Redis is compiled
            from its builder when ``redis_url`` is set), or a function giving it at start-up.
    """

    def __init__(
        self,
        settings: ServeSettings | Callable[[], ServeSettings],
        graph: Graph | Callable[[], Graph | None],
    ) -> None:
        self._settings = settings
        self._graph = graph
        self.settings = settings if isinstance(settings, ServeSettings) else ServeSettings()
        self.metrics = Metrics()
        self.runs = Runs(self.settings, self.metrics)
        self.ready = False

    def authorize(self, authorization: str | None) -> str:
        """The caller's namespace for an ``Authorization`` header (`ApiKeys.check`).

        Raises:
            ApiError: 503 while starting or stopping, 401 without a configured key.
        """
        if not self.ready:
            raise ApiError(503, "the server is starting or stopping", type="server_error")
        try:
            return self.settings.api_keys.check(authorization)
        except AuthError as exc:
            raise ApiError(401, str(exc), code="invalid_api_key") from None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Service]:
        """Takes the graph, opens the Redis checkpointer, and at exit cancels the runs still
        going (finished trajectories are in Redis: a retry resumes them)."""
        if callable(self._settings):
            self.settings = self._settings()
            self.runs.settings = self.settings
        graph = self._graph() if callable(self._graph) else self._graph
        if graph is None:
            raise RuntimeError("no PaCoRe graph to serve")
        builder = getattr(graph, "builder", None)
        self.runs.graph = graph
        self.runs.defaults = getattr(builder, "defaults", None) or PaCoReContext(rounds="low")
        async with contextlib.AsyncExitStack() as stack:
            if self.settings.redis_url:
                from pacore_graph.checkpoints import AsyncRedisSaver

                saver = await stack.enter_async_context(
                    AsyncRedisSaver.from_conn_string(
                        self.settings.redis_url,
                        **{"ttl": self.settings.thread_ttl_s, **self.settings.saver_options},
                    )
                )
                await saver.asetup()
                assert builder is not None, "a durable server needs the graph's builder"
                self.runs.durable = builder.compile(checkpointer=saver)
            if self.settings.freeze_gc:
                tune_collector()
            self.ready = True
            try:
                yield self
            finally:
                self.ready = False
                await self.runs.cancel_all()
                self.runs.durable = None
