"""Data-parallel replicas of one model: least outstanding requests first, failover on refusal."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, Literal, TypeVar

import openai

T = TypeVar("T")


AsyncTransport = Literal["auto", "aiohttp", "openai"]
"""How async calls reach the server: ``aiohttp`` (requests written directly on an aiohttp
session), ``openai`` (the ``openai`` SDK on its default httpx transport), or ``auto``
(aiohttp when it is installed). Sync calls always use the SDK."""

KEEPALIVE_S = 4.0
"""Idle time after which a pooled connection is dropped: under the 5 s keep-alive of
uvicorn (vLLM, SGLang), so a connection the server is about to close is not reused."""


def _aiohttp_available() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def _httpx_client(max_connections: int | None) -> Any | None:
    """openai's default httpx client, with ``max_connections`` if given (else 1,000)."""
    if max_connections is None:
        return None
    import httpx2

    limits = httpx2.Limits(
        max_connections=max_connections, max_keepalive_connections=min(max_connections, 100)
    )
    return openai.DefaultAsyncHttpxClient(limits=limits)


async def _close_with_loop(resource: Any, forget: Callable[[], None]) -> AsyncIterator[None]:
    """Parked at its yield; the loop's ``shutdown_asyncgens`` (run by ``asyncio.run``)
    closes it, which closes ``resource`` (its sockets) before the loop goes, then
    ``forget``s it (a pool refers to its loop, so it would keep the closed loop alive)."""
    try:
        yield
    finally:
        try:
            await resource.close()
        finally:
            forget()


class Replica:
    """One endpoint with its pooled clients: one sync, one async per live event loop.

    Args:
        base_url: The endpoint.
        client_kwargs: ``openai`` client arguments.
        max_connections: Connections of one async pool; None: no limit (the graph's
            ``max_concurrency`` bounds the calls in flight).
        async_transport: See `AsyncTransport`.
    """

    def __init__(
        self,
        base_url: str,
        client_kwargs: dict[str, Any],
        *,
        max_connections: int | None = None,
        async_transport: AsyncTransport = "auto",
    ) -> None:
        if async_transport == "aiohttp" and not _aiohttp_available():
            raise ImportError("async_transport='aiohttp' needs aiohttp: pip install aiohttp")
        self.base_url = base_url
        self.outstanding = 0
        self.down_until = 0.0
        self.max_connections = max_connections
        self.uses_aiohttp = async_transport == "aiohttp" or (
            async_transport == "auto" and _aiohttp_available()
        )
        """True when async calls go over `aio_session` rather than the SDK."""
        self._kwargs = {**client_kwargs, "base_url": base_url}
        self._client: openai.OpenAI | None = None
        # An HTTP pool is bound to the loop it was opened on.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def client(self) -> openai.OpenAI:
        """The pooled synchronous client."""
        if self._client is None:
            self._client = openai.OpenAI(**self._kwargs)
        return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The pooled async ``openai`` client of the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            http = _httpx_client(self.max_connections)
            extra = {} if http is None else {"http_client": http}
            client = self._aclients[loop] = openai.AsyncOpenAI(**self._kwargs, **extra)
            self._close_at_shutdown(loop, client)
        return client

    @property
    def aio_session(self) -> Any:
        """The pooled ``aiohttp.ClientSession`` of the running event loop.

        httpx's pool scans all its connections on every request and response, so its cost
        per call grows with the calls in flight (7-15 ms of CPU per call at 1,024 in flight
        in ``benchmarks/run.py``); aiohttp's connector does not, and writing the request
        directly skips the SDK's request building (~1 ms a call).
        """
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self.max_connections or 0,  # 0: no limit
                keepalive_timeout=KEEPALIVE_S,
            )
            # Not trust_env: it looks up proxies and .netrc in a worker thread on every
            # request (two thread hops a call); `proxy` reads the environment once instead.
            session = aiohttp.ClientSession(connector=connector)
            self._sessions[loop] = session
            self._close_at_shutdown(loop, session)
        return session

    @functools.cached_property
    def proxy(self) -> dict[str, Any]:
        """``proxy``/``proxy_auth`` of aiohttp calls: the environment's proxy for this
        endpoint (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), as httpx (the SDK) honours it."""
        from aiohttp.helpers import get_env_proxy_for_url
        from yarl import URL

        try:
            proxy, auth = get_env_proxy_for_url(URL(self.base_url))
        except LookupError:
            return {}
        return {"proxy": proxy, "proxy_auth": auth}

    def _close_at_shutdown(self, loop: asyncio.AbstractEventLoop, resource: Any) -> None:
        # The loop keeps async generators weakly and closes them in shutdown_asyncgens;
        # the first __anext__ registers this one with the running loop.
        def forget() -> None:
            for pools in (self._aclients, self._sessions, self._closers):
                pools.pop(loop, None)

        closer = _close_with_loop(resource, forget)
        with contextlib.suppress(StopIteration):
            closer.__anext__().send(None)
        self._closers.setdefault(loop, []).append(closer)

    @property
    def async_clients(self) -> int:
        """How many event loops this replica holds an async pool for (SDK or aiohttp)."""
        return len(set(self._aclients.keys()) | set(self._sessions.keys()))


class ReplicaSet:
    """Spreads calls over replicas and routes around the ones that refuse connections.

    Args:
        base_urls: The replicas' endpoints.
        client_kwargs: ``openai`` client arguments shared by all replicas.
        cooldown_s: How long a replica that refused a connection is skipped.
        **replica_options: `Replica` options (``max_connections``, ``async_transport``).
    """

    def __init__(
        self,
        base_urls: list[str],
        client_kwargs: dict[str, Any],
        cooldown_s: float = 10.0,
        **replica_options: Any,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one base_url is needed")
        self.replicas = [Replica(url, client_kwargs, **replica_options) for url in base_urls]
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()

    def acquire(self, exclude: Collection[Replica] = ()) -> Replica:
        """Takes the live replica with the fewest calls in flight (the first on ties)."""
        now = time.monotonic()
        with self._lock:
            candidates = [r for r in self.replicas if r not in exclude]
            live = [r for r in candidates if r.down_until <= now] or candidates
            replica = min(live, key=lambda r: r.outstanding)
            replica.outstanding += 1
            return replica

    def release(self, replica: Replica) -> None:
        """Gives back a call slot taken by `acquire`."""
        with self._lock:
            replica.outstanding -= 1

    def open(self, fn: Callable[[Replica], T]) -> tuple[T, Replica]:
        """Runs ``fn`` on a replica, failing over on connection errors; the caller releases it.

        Holding the slot past the return lets a stream count as in flight until it ends.
        """
        tried: set[Replica] = set()
        while True:
            replica = self.acquire(tried)
            try:
                return fn(replica), replica
            except openai.APIConnectionError as exc:
                self.release(replica)
                if not self._failover(replica, tried, exc):
                    raise
            except BaseException:
                self.release(replica)
                raise

    async def aopen(self, fn: Callable[[Replica], Awaitable[T]]) -> tuple[T, Replica]:
        """Async `open`."""
        tried: set[Replica] = set()
        while True:
            replica = self.acquire(tried)
            try:
                return await fn(replica), replica
            except openai.APIConnectionError as exc:
                self.release(replica)
                if not self._failover(replica, tried, exc):
                    raise
            except BaseException:
                self.release(replica)
                raise

    def call(self, fn: Callable[[Replica], T]) -> T:
        """`open` and release at once: for calls that return a whole response."""
        result, replica = self.open(fn)
        self.release(replica)
        return result

    async def acall(self, fn: Callable[[Replica], Awaitable[T]]) -> T:
        """Async `call`."""
        result, replica = await self.aopen(fn)
        self.release(replica)
        return result

    def _failover(self, replica: Replica, tried: set[Replica], exc: Exception) -> bool:
        # A timeout says the replica is slow, not gone: no cooldown, but try another.
        if not isinstance(exc, openai.APITimeoutError):
            with self._lock:
                replica.down_until = time.monotonic() + self.cooldown_s
        tried.add(replica)
        return len(tried) < len(self.replicas)
