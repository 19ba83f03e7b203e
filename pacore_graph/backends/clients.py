"""The SDK clients of `ChatOpenAICompatible`, in place of those ``BaseChatOpenAI`` builds.

An async pool belongs to the event loop it was opened on, and one model object serves
several loops (each ``asyncio.run``): `LoopClients` keeps one SDK client (on the SDK's
aiohttp transport) and one aiohttp session (the direct path) per running loop, closed
when that loop shuts its async generators down. `LazySyncClient` makes the sync client on
first use, on a transport that keeps each call's deadline (`DeadlineTransport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import httpx2
import openai

from pacore_graph.backends.deadline import DeadlineTransport, keepalive_options, ssl_context
from pacore_graph.backends.size import AsyncSizedStream, event_stream, over_length, too_large

if TYPE_CHECKING:
    from pacore_graph.backends.direct import DirectRequest

KEEPALIVE_S = 4.0
"""Idle time after which a pooled connection is dropped: under the 5 s keep-alive of
uvicorn (vLLM, SGLang), so a connection the server is about to close is not reused."""


def environment_proxy(url: str) -> str | None:
    """The HTTP proxy the environment sends ``url`` through (HTTP_PROXY, NO_PROXY, ...)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0]
    proxy = urllib.request.getproxies().get(scheme.lower())
    return proxy if proxy and not urllib.request.proxy_bypass(host) else None


class AioHttpClient(openai.DefaultAioHttpClient):
    """The SDK's aiohttp client, with a refused connection reported as one (the SDK's
    transport maps it to ``ConnectTimeout``), and replies past ``max_bytes`` stopped while
    they are read (`AsyncSizedStream`)."""

    def __init__(self, *, max_bytes: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_bytes = max_bytes

    async def send(
        self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx2.Response:
        limit = self.max_bytes
        try:
            response = await super().send(request, stream=stream or limit is not None, **kwargs)
        except httpx2.ConnectTimeout as exc:
            if isinstance(cause := exc.__cause__, aiohttp.ClientConnectorError):
                raise httpx2.ConnectError(str(cause), request=request) from cause
            raise
        if limit is None:
            return response
        try:
            events = event_stream(response.headers)
            if not events and over_length(response.headers, limit):
                raise too_large(limit)
            response.stream = AsyncSizedStream(response.stream, limit, events)  # type: ignore[arg-type]
            if not stream:  # as httpx2's send reads it
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response


class _StandIn:
    """Stands in for a client attribute of ``BaseChatOpenAI``: public attributes are read
    from ``current()``, the client of the moment."""

    def current(self) -> Any:
        raise NotImplementedError

    def __bool__(self) -> bool:  # BaseChatOpenAI builds its own client when this is falsy
        return True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy and pickle probes, and our own before __init__
            raise AttributeError(name)
        return getattr(self.current(), name)


class _LoopPools:
    """One event loop's SDK client and aiohttp session, each made on first use."""

    __slots__ = ("client", "closer", "session")

    def __init__(self) -> None:
        self.client: openai.AsyncOpenAI | None = None
        self.session: aiohttp.ClientSession | None = None
        self.closer: AsyncIterator[None] | None = None

    async def close(self) -> None:
        try:
            if self.client is not None:
                await self.client.close()
        finally:
            if self.session is not None:
                await self.session.close()


class LoopClients(_StandIn):
    """Stands in for ``BaseChatOpenAI.root_async_client``: the running loop's
    ``openai.AsyncOpenAI``, and its aiohttp session for the direct path."""

    def __init__(self) -> None:
        self.direct: DirectRequest | None = None
        """How the direct path sends; None: every call goes through the SDK."""
        self.stream_timeout: httpx2.Timeout | None = None
        """Per-request timeouts of a stream: the stall limit per read."""
        self.max_bytes: int | None = None
        self._kwargs: dict[str, Any] = {}
        self._max_connections = 0
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPools] = (
            weakref.WeakKeyDictionary()
        )

    def configure(
        self, max_connections: int | None, direct: DirectRequest | None, **client_kwargs: Any
    ) -> None:
        """Sets the ``openai.AsyncOpenAI`` arguments of clients made from now on."""
        self._kwargs = client_kwargs
        # aiohttp reads a limit of 0 as "no limit"; its default (100) would queue calls
        # the graph's max_concurrency already lets through.
        self._max_connections = max_connections or 0
        self.direct = direct

    def current(self) -> openai.AsyncOpenAI:
        """The running loop's SDK client."""
        pools = self._of_loop()
        if pools.client is None:
            limits = httpx2.Limits(
                max_connections=self._max_connections, keepalive_expiry=KEEPALIVE_S
            )
            http = AioHttpClient(limits=limits, max_bytes=self.max_bytes)
            pools.client = openai.AsyncOpenAI(**self._kwargs, http_client=http)
        return pools.client

    def session(self) -> aiohttp.ClientSession:
        """The running loop's aiohttp session for direct calls."""
        pools = self._of_loop()
        if pools.session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=KEEPALIVE_S
            )
            pools.session = aiohttp.ClientSession(connector=connector)
        return pools.session

    def __len__(self) -> int:
        """How many event loops hold pools now."""
        return len(self._pools)

    def _of_loop(self) -> _LoopPools:
        loop = asyncio.get_running_loop()
        pools = self._pools.get(loop)
        if pools is None:
            pools = self._pools[loop] = _LoopPools()
            pools.closer = _closed_with_loop(pools, lambda: self._pools.pop(loop, None))
            # The first step registers the generator with the running loop, which closes
            # it in shutdown_asyncgens; it stays parked at its yield until then. Forgotten
            # then: pools refer to their loop, so keeping them would keep it alive.
            with contextlib.suppress(StopIteration):
                cast("Coroutine[Any, Any, None]", pools.closer.__anext__()).send(None)
        return pools


async def _closed_with_loop(pools: _LoopPools, forget: Callable[[], object]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        try:
            await pools.close()
        finally:
            forget()


class LazySyncClient(_StandIn):
    """Stands in for ``BaseChatOpenAI.root_client``: the SDK's sync client, made on first
    use (most runs are async)."""

    def __init__(self) -> None:
        self._make: Callable[[], openai.OpenAI] | None = None
        self._client: openai.OpenAI | None = None
        self.stream_timeout: httpx2.Timeout | None = None
        """Per-request timeouts of a sync stream: the stall limit per read."""

    def configure(
        self,
        client_kwargs: dict[str, Any],
        *,
        timeout: Any,
        stream_timeout: httpx2.Timeout | None,
        deadline: float | None,
        max_bytes: int | None,
        socket_options: Any,
    ) -> None:
        """Sets the ``openai.OpenAI`` arguments of the client, made on first use on a
        transport that ends each call by ``deadline`` and each reply past ``max_bytes``
        (`DeadlineTransport`), and a stream's per-request timeouts."""
        url = client_kwargs.get("base_url")
        limits = httpx2.Limits(  # the SDK's, with our keep-alive
            max_connections=1000, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_S
        )

        def make() -> openai.OpenAI:
            inner = httpx2.HTTPTransport(
                verify=ssl_context(),
                limits=limits,
                proxy=environment_proxy(url) if url else None,  # a custom transport skips it
                socket_options=keepalive_options() if socket_options is None else socket_options,
            )
            transport: httpx2.BaseTransport = inner
            if deadline is not None or max_bytes is not None:
                transport = DeadlineTransport(inner, deadline, max_bytes)
            http = openai.DefaultHttpxClient(transport=transport, timeout=timeout)
            return openai.OpenAI(**client_kwargs, timeout=timeout, http_client=http)

        self._make, self._client, self.stream_timeout = make, None, stream_timeout

    def current(self) -> openai.OpenAI:
        if self._client is None:
            assert self._make is not None, "configured by ChatOpenAICompatible's validator"
            self._client = self._make()
        return self._client


class ChatCompletions(_StandIn):
    """Stands in for ``BaseChatOpenAI.async_client`` and ``client``: ``chat.completions``
    of the client of the moment."""

    def __init__(self, clients: LoopClients | LazySyncClient) -> None:
        self._clients = clients

    def current(self) -> Any:
        return self._clients.current().chat.completions
