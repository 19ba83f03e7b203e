"""Data-parallel replicas of one model: least outstanding requests first, failover on refusal."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import openai

T = TypeVar("T")


class Replica:
    """One endpoint with its pooled clients: one sync, one async per live event loop."""

    def __init__(self, base_url: str, client_kwargs: dict[str, Any]) -> None:
        self.base_url = base_url
        self.outstanding = 0
        self.down_until = 0.0
        self._kwargs = {**client_kwargs, "base_url": base_url}
        self._client: openai.OpenAI | None = None
        # An httpx pool is bound to the loop it was opened on.
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, openai.AsyncOpenAI
        ] = weakref.WeakKeyDictionary()

    @property
    def client(self) -> openai.OpenAI:
        """The pooled synchronous client."""
        if self._client is None:
            self._client = openai.OpenAI(**self._kwargs)
        return self._client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The pooled async client of the running event loop."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._aclients[loop] = openai.AsyncOpenAI(**self._kwargs)
        return client

    @property
    def async_clients(self) -> int:
        """How many async clients (event loops) this replica holds."""
        return len(self._aclients)


class ReplicaSet:
    """Spreads calls over replicas and routes around the ones that refuse connections.

    Args:
        base_urls: The replicas' endpoints.
        client_kwargs: ``openai`` client arguments shared by all replicas.
        cooldown_s: How long a replica that refused a connection is skipped.
    """

    def __init__(
        self, base_urls: list[str], client_kwargs: dict[str, Any], cooldown_s: float = 10.0
    ) -> None:
        if not base_urls:
            raise ValueError("at least one base_url is needed")
        self.replicas = [Replica(url, client_kwargs) for url in base_urls]
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
