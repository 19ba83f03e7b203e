"""The SDK clients of `ChatOpenAICompatible`, in place of those ``BaseChatOpenAI`` builds:
`LoopClients` per event loop (a pool belongs to its loop), `LazySyncClient` on first use."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import httpx2
import openai

from pacore_graph.backends.deadline import DeadlineTransport
from pacore_graph.backends.direct import DirectRequest
from pacore_graph.backends.size import AsyncSizedStream, ByteCount

KEEPALIVE_S = 4.0
"""Idle time after which a pooled connection is dropped: under uvicorn's 5 s (vLLM, SGLang)."""

KERNEL_CONNECT_LIMIT = hasattr(socket, "TCP_SYNCNT")
"""Linux: the kernel bounds a direct call's connect (2 SYN retries, ~7 s), not a loop timer,
which fires spuriously while thousands of calls starting at once hold the loop (issue 25)."""


def _socket(addr_info: Any) -> socket.socket:
    sock = socket.socket(family=addr_info[0], type=addr_info[1], proto=addr_info[2])
    if KERNEL_CONNECT_LIMIT and addr_info[0] in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 2)
    return sock


def _keepalive_options() -> list[tuple[int, int, int]]:
    """TCP keep-alive as langchain-openai sets it: a peer gone silently is found in ~2 min."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", 60),
        ("TCP_KEEPINTVL", 10),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 120_000),
    ):
        if hasattr(socket, name):  # Linux has them all; other systems some
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One SSL context for every sync client: loading the CA bundle is slow."""
    return httpx2.create_ssl_context()


def environment_proxy(url: str) -> str | None:
    """The HTTP proxy the environment sends ``url`` through (HTTP_PROXY, NO_PROXY, ...)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0]
    proxy = urllib.request.getproxies().get(scheme.lower())
    return proxy if proxy and not urllib.request.proxy_bypass(host) else None


class AioHttpClient(openai.DefaultAioHttpClient):
    """The SDK's aiohttp client; a refused connection is no ``ConnectTimeout``, a reply past
    ``max_bytes`` stops while read."""

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
            counter = ByteCount.of(response.headers, limit)
            response.stream = AsyncSizedStream(response.stream, counter)  # type: ignore[arg-type]
            if not stream:  # as httpx2's send reads it
                await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response


class _StandIn:
    """Stands in for a client attribute of ``BaseChatOpenAI``, forwarding to ``current()``."""

    def current(self) -> Any:
        raise NotImplementedError

    def __bool__(self) -> bool:  # BaseChatOpenAI builds its own client when this is falsy
        return True

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy and pickle probes, and our own before __init__
            raise AttributeError(name)
        return getattr(self.current(), name)


@dataclass(slots=True)
class _LoopPools:
    """One event loop's SDK client and aiohttp session, each made on first use."""

    client: openai.AsyncOpenAI | None = None
    session: aiohttp.ClientSession | None = None
    closer: AsyncIterator[None] | None = None

    async def closed_with_loop(self, forget: Callable[[], object]) -> AsyncIterator[None]:
        """Yields once; when the loop shuts down, closes the pools and ``forget``s them (each
        step even when one before it fails)."""
        try:
            yield
        finally:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(forget)
                for pool in (self.session, self.client):  # closed in reverse
                    if pool is not None:
                        stack.push_async_callback(pool.close)


class LoopClients(_StandIn):
    """``BaseChatOpenAI.root_async_client``: the running loop's SDK client and session."""

    def __init__(self) -> None:
        self.direct: DirectRequest | None = None  # None: every call goes through the SDK
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
        # aiohttp reads 0 as no limit; its default (100) would queue calls.
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
                limit=self._max_connections, keepalive_timeout=KEEPALIVE_S, socket_factory=_socket
            )
            pools.session = aiohttp.ClientSession(connector=connector)
        return pools.session

    def __len__(self) -> int:
        return len(self._pools)

    def _of_loop(self) -> _LoopPools:
        loop = asyncio.get_running_loop()
        pools = self._pools.get(loop)
        if pools is None:
            pools = self._pools[loop] = _LoopPools()
            pools.closer = pools.closed_with_loop(lambda: self._pools.pop(loop, None))
            # The first step registers the generator with the loop, which closes it in
            # shutdown_asyncgens; forgotten then, as pools refer to their loop.
            with contextlib.suppress(StopIteration):
                cast("Coroutine[Any, Any, None]", pools.closer.__anext__()).send(None)
        return pools


class LazySyncClient(_StandIn):
    """``BaseChatOpenAI.root_client``: the SDK's sync client, made on first use."""

    def __init__(self) -> None:
        self._make: Callable[[], openai.OpenAI] | None = None
        self._client: openai.OpenAI | None = None

    def configure(
        self,
        client_kwargs: dict[str, Any],
        *,
        timeout: Any,
        deadline: float | None,
        max_bytes: int | None,
        socket_options: Any,
    ) -> None:
        """Sets the ``openai.OpenAI`` arguments of the client, on `DeadlineTransport`."""
        url = client_kwargs.get("base_url")
        limits = httpx2.Limits(  # the SDK's, with our keep-alive
            max_connections=1000, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_S
        )

        def make() -> openai.OpenAI:
            inner = httpx2.HTTPTransport(
                verify=_ssl_context(),
                limits=limits,
                proxy=environment_proxy(url) if url else None,  # a custom transport skips it
                socket_options=_keepalive_options() if socket_options is None else socket_options,
            )
            transport = DeadlineTransport(inner, deadline, max_bytes)  # None, None: passes all
            http = openai.DefaultHttpxClient(transport=transport, timeout=timeout)
            return openai.OpenAI(**client_kwargs, timeout=timeout, http_client=http)

        self._make, self._client = make, None

    def current(self) -> openai.OpenAI:
        if self._client is None:
            assert self._make is not None, "configured by ChatOpenAICompatible's validator"
            self._client = self._make()
        return self._client


class ChatCompletions(_StandIn):
    """``BaseChatOpenAI.async_client`` and ``client``: the current ``chat.completions``."""

    def __init__(self, clients: LoopClients | LazySyncClient) -> None:
        self._clients = clients

    def current(self) -> Any:
        return self._clients.current().chat.completions
