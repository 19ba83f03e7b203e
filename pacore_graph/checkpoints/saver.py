"""`RedisSaver` and `AsyncRedisSaver`: LangGraph checkpoint savers on plain Redis commands.

Both run the operations of `pacore_graph.checkpoints.ops`; they differ only in how a
batch of commands reaches the server (a sync or an asyncio redis-py client), and in how
they keep a thread's lease alive (a thread, or an asyncio task).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import copy
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self, cast

import redis
import redis.asyncio as aredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.driver_info import DriverInfo

from pacore_graph.checkpoints.errors import RedisAuthenticationError, RedisOutOfMemoryError
from pacore_graph.checkpoints.layout import LEASE_CONFIG_KEY, Layout
from pacore_graph.checkpoints.ops import Batch, Emit, LeaseState, Op, Ops, next_version, setup
from pacore_graph.errors import LeaseLostError, ThreadBusyError

DEFAULT_PREFIX = "pacore"

DEFAULT_LEASE_TTL = 10.0
"""Seconds a thread's lease outlives its last renewal: how long after a run dies (SIGKILL,
a lost host) its thread stays busy. Renewed every third of it while the run lives."""

LEASE_POLL_S = 0.5
"""How often a run waiting for a busy thread tries its lease again (at most)."""

Wait = bool | float
"""Whether to wait for a busy thread: False raises `ThreadBusyError` at once, True waits as
long as it takes, a number waits that many seconds at most."""

_log = logging.getLogger(__name__)


@dataclass
class ThreadLease:
    """A run's hold on one thread: its writes are fenced by ``token`` once `bind` put it in
    the run's config.

    Attributes:
        thread_id: The thread held.
        token: Unique to this hold: ``PID@HOST/RANDOM``, so a busy error names the holder.
        lost: Set when a renewal found the lease lapsed or taken: every later write of the
            run fails with `LeaseLostError`.
    """

    thread_id: str
    token: str
    lost: bool = False

    def bind(self, config: RunnableConfig) -> RunnableConfig:
        """``config`` with the token, so the saver fences the run's writes by it."""
        configurable = {**config.get("configurable", {}), LEASE_CONFIG_KEY: self.token}
        return {**config, "configurable": configurable}


def _new_token() -> str:
    return f"{os.getpid()}@{socket.gethostname()}/{uuid.uuid4().hex}"


def describe_holder(token: str | None) -> str:
    """``pid 4242 on host-a`` for a token of ours; another program's token as it is."""
    if token is None:
        return "nobody"
    who, slash, _ = token.rpartition("/")
    pid, at, host = who.partition("@")
    return f"pid {pid} on {host}" if slash and at and pid.isdigit() else token


def _busy(thread_id: str, state: LeaseState, waited: float | None) -> ThreadBusyError:
    holder = describe_holder(state.holder) if state.holder else None
    still = f" after waiting {waited:.1f} s" if waited else ""
    # A live run renews its lease; one that died leaves it to lapse (say when).
    lapses = f", lapsing in {state.ttl_ms / 1000:.1f} s unless renewed" if state.ttl_ms > 0 else ""
    return ThreadBusyError(
        f"thread {thread_id} is busy{still}: another run holds it ({holder or 'it just ended'}"
        f"{lapses}); wait for it (pacore solve --wait, wait=True) or use another thread id",
        thread_id,
        holder,
    )


class RedisUnavailableError(redis.exceptions.ConnectionError, builtins.ConnectionError):
    """Redis cannot be reached. The message names the server, never its password.

    Both a redis-py ``ConnectionError`` and Python's, so either ``except`` catches it.
    """


def _address(client: Any) -> str:
    """Where ``client`` connects, without credentials."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        kwargs = pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
        host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
        return f"{scheme}://{host}:{port}/{kwargs.get('db', 0)}"
    with contextlib.suppress(Exception):  # a Cluster client: name a startup node
        node = client.get_default_node() or client.nodes_manager.startup_nodes[0]
        return f"redis://{node.host}:{node.port} (cluster)"
    return "the configured Redis Cluster"


def _has_password(client: Any) -> bool:
    """Whether ``client`` sends a password (a Cluster client keeps its options elsewhere)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = pool.connection_kwargs if pool is not None else {}
    with contextlib.suppress(AttributeError):
        kwargs = kwargs or client.nodes_manager.connection_kwargs
    return bool(kwargs.get("password"))


class _RedisSaverBase(BaseCheckpointSaver[str]):
    """What both savers share: options, the operations, version numbers."""

    def __init__(
        self,
        client: Any,
        *,
        ttl: float | None,
        key_prefix: str,
        serde: SerializerProtocol | None,
        lease_ttl: float | None,
    ) -> None:
        super().__init__(serde=serde)
        encoder = getattr(client, "get_encoder", None)
        if encoder is not None and encoder().decode_responses:
            raise ValueError("the Redis client must be created with decode_responses=False")
        if lease_ttl is not None and lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be positive seconds or None, not {lease_ttl!r}")
        self.client = client
        self.ttl = ttl
        self.key_prefix = key_prefix
        self.lease_ttl = lease_ttl
        self.ops = Ops(
            Layout(self.serde, key_prefix, ttl),
            cluster=isinstance(client, RedisCluster | AsyncRedisCluster),
        )

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Self:
        """A shallow clone whose serializer allows ``extra_allowlist`` (see LangGraph)."""
        # LangGraph returns ``self`` or ``copy.copy(self)``: the same class.
        clone = cast(Self, super().with_allowlist(extra_allowlist))
        if clone is not self:
            # The clone must also encode with its own serializer, not ours.
            clone.ops = copy.copy(self.ops)
            clone.ops.layout = copy.copy(self.ops.layout)
            clone.ops.layout.serde = clone.serde
        return clone

    def get_next_version(self, current: str | int | None, channel: None) -> str:
        """LangGraph's version scheme: a zero-padded counter and a random tie-breaker.

        Args:
            current: The channel's current version, if any.
            channel: Unused (kept by LangGraph for compatibility).

        Returns:
            A version that sorts after ``current``.
        """
        return next_version(current)

    def _unavailable(self, exc: Exception) -> RedisUnavailableError:
        return RedisUnavailableError(f"Redis at {_address(self.client)} is unreachable: {exc}")

    def _failure(self, exc: redis.exceptions.RedisError) -> Exception | None:
        """The saver's one-line error for what Redis refused; None to raise ``exc`` as is."""
        address = _address(self.client)
        # Redis >= 6 refuses a bad password at connect; older ones answer NOAUTH per command.
        if isinstance(exc, redis.exceptions.AuthenticationError) or str(exc).startswith("NOAUTH"):
            why = (
                "wrong password or user in the URL"
                if _has_password(self.client)
                else "it needs a password: redis://:PASSWORD@host:port/db"
            )
            return RedisAuthenticationError(f"Redis at {address}: authentication failed ({why})")
        if isinstance(exc, _CONNECTION_ERRORS):
            return self._unavailable(exc)
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            # Redis's message names the refused command and its arguments: data, not for a log.
            return RedisOutOfMemoryError(
                f"Redis at {address} is out of memory (used memory is over maxmemory and its "
                "maxmemory-policy evicts none of these keys), so it refused a checkpoint "
                "write: raise maxmemory (CONFIG SET maxmemory ...) or free memory"
            )
        return None

    # -- the lease: what the sync and the async saver share ------------------------------

    def _lease_ms(self) -> int:
        if self.lease_ttl is None:
            raise ValueError("leases are off on this saver (lease_ttl=None)")
        return max(1, round(self.lease_ttl * 1000))

    @property
    def _renew_every(self) -> float:
        return (self.lease_ttl or DEFAULT_LEASE_TTL) / 3

    def _retry_in(self, thread_id: str, state: LeaseState, wait: Wait, started: float) -> float:
        """Seconds until the next attempt at a busy thread's lease.

        Raises:
            ThreadBusyError: ``wait`` is False, or its seconds ran out.
        """
        if wait is False:
            raise _busy(thread_id, state, None)
        waited = time.monotonic() - started
        left = float("inf") if wait is True else float(wait) - waited
        if left <= 0:
            raise _busy(thread_id, state, waited)
        if state.holder is None:  # it lapsed between the SET and the GET: try again now
            return 0.01
        # A lease about to lapse is tried again just after it does.
        soon = state.ttl_ms / 1000 + 0.01 if state.ttl_ms > 0 else LEASE_POLL_S
        return max(0.01, min(LEASE_POLL_S, soon, left))


_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


DEFAULT_MAX_CONNECTIONS = 32
"""Connections of a saver made by ``from_conn_string``: Redis runs one command at a time,
so more connections add only their set-up cost (a burst of trajectories finishing at once
would otherwise open ~100)."""


def _pool_options(max_connections: int) -> dict[str, Any]:
    # One DriverInfo for the pool: without it redis-py reads its version from the installed
    # package metadata for every new connection (~2 ms each, measured in benchmarks/run.py).
    return {"max_connections": max_connections, "driver_info": DriverInfo()}


def _pool_limit(client: Any) -> int | None:
    """How many commands may be in flight at once without the pool raising "Too many
    connections": a plain pool's ``max_connections`` (redis-py's default is 100); None for a
    blocking pool (it waits for a free connection by itself) or a Cluster client."""
    pool = getattr(client, "connection_pool", None)
    blocking = (redis.BlockingConnectionPool, aredis.BlockingConnectionPool)
    if pool is None or isinstance(pool, blocking):
        return None
    limit = getattr(pool, "max_connections", None)
    return limit if isinstance(limit, int) and 0 < limit < 2**31 - 1 else None


class RedisSaver(_RedisSaverBase):
    """A synchronous LangGraph checkpoint saver on any Redis-protocol server, no modules.

    Works on Redis 7+, Valkey, managed Redis and Redis Cluster (a thread's keys share
    one hash slot). Every write is one MULTI/EXEC transaction.

    Args:
        client: A ``redis.Redis`` (or ``redis.cluster.RedisCluster``) client created
            with ``decode_responses=False``.
        ttl: Seconds a thread lives after its last write (every write refreshes all of
            the thread's keys); None keeps threads until deleted.
        key_prefix: Prefix of every key, so several apps can share one database.
        serde: Serializer; LangGraph's default when None.
        lease_ttl: Seconds a thread's lease (`lease`) outlives its holder's last renewal,
            i.e. how soon a dead run's thread is free again; None turns leases off (for a
            server without Lua scripting: EVAL).

    Raises:
        ValueError: On a client that decodes responses, a brace in ``key_prefix`` or a
            non-positive ``ttl`` or ``lease_ttl``.

    Example:
        ```python
        with RedisSaver.from_conn_string("redis://127.0.0.1:6379/0", ttl=86400) as saver:
            graph = builder.compile(checkpointer=saver)
            graph.invoke(inputs, {"configurable": {"thread_id": "t1"}})
        ```
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        ttl: float | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        serde: SerializerProtocol | None = None,
        lease_ttl: float | None = DEFAULT_LEASE_TTL,
    ) -> None:
        super().__init__(client, ttl=ttl, key_prefix=key_prefix, serde=serde, lease_ttl=lease_ttl)
        # More threads writing at once than the pool has connections would fail with
        # "Too many connections"; past the limit they wait their turn instead.
        limit = _pool_limit(client)
        self._slots = threading.BoundedSemaphore(limit) if limit else contextlib.nullcontext()

    @classmethod
    @contextlib.contextmanager
    def from_conn_string(
        cls,
        url: str,
        *,
        ttl: float | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        lease_ttl: float | None = DEFAULT_LEASE_TTL,
    ) -> Iterator[RedisSaver]:
        """A saver on a new connection pool to ``url``, closed on exit.

        Args:
            url: A redis-py URL such as ``redis://:password@host:6379/0``.
            ttl: See `RedisSaver`.
            key_prefix: See `RedisSaver`.
            max_connections: Connections to Redis; more writes at once wait their turn.
            lease_ttl: See `RedisSaver`.

        Yields:
            The saver.
        """
        client = redis.Redis.from_url(url, **_pool_options(max_connections))
        try:
            yield cls(client, ttl=ttl, key_prefix=key_prefix, lease_ttl=lease_ttl)
        finally:
            client.close()

    def setup(self, *, allow_eviction: bool = False) -> None:
        """Checks that Redis answers and keeps what it is given. Plain Redis needs no index
        or schema.

        Args:
            allow_eviction: Accept a ``maxmemory-policy`` that may evict the saver's keys
                (``allkeys-*``; ``volatile-*`` when ``ttl`` is set), which damages threads.

        Raises:
            RedisUnavailableError: If Redis cannot be reached.
            RedisAuthenticationError: If Redis refuses the URL's password or user.
            RedisEvictionPolicyError: If Redis may evict the saver's keys.
        """
        address = _address(self.client)
        self._run(setup(self.ttl, allow_eviction=allow_eviction, address=address))

    def _execute(self, batch: Batch) -> list[Any]:
        try:
            try:
                return self._pipeline(batch, transaction=batch.atomic or batch.snapshot)
            except redis.exceptions.OutOfMemoryError:
                if not batch.snapshot:
                    raise
                return self._pipeline(batch, transaction=False)  # see `Batch`
        except redis.exceptions.RedisError as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            raise failure from exc

    def _pipeline(self, batch: Batch, *, transaction: bool) -> list[Any]:
        with self._slots, self.client.pipeline(transaction=transaction) as pipe:
            for command in batch.commands:
                pipe.execute_command(*command)
            return pipe.execute(raise_on_error=not batch.tolerant)

    def _run(self, op: Op) -> Any:
        reply = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = None if isinstance(step, Emit) else self._execute(step)

    def _stream(self, op: Op) -> Iterator[CheckpointTuple]:
        reply = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration:
                return
            if isinstance(step, Emit):
                yield from step.items
                reply = None
            else:
                reply = self._execute(step)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint in ``config`` (its latest when no ``checkpoint_id``), or None."""
        return self._run(self.ops.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, fetched a page at a time.

        Args:
            config: Thread (and optionally namespace / checkpoint id) to list; None
                lists every registered thread.
            filter: Exact match on top-level metadata keys.
            before: Only checkpoints older than this one.
            limit: At most this many.

        Yields:
            Matching checkpoint tuples.
        """
        yield from self._stream(self.ops.list(config, filter=filter, before=before, limit=limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint atomically; only channels in ``new_versions`` are written.

        Returns:
            The config of the stored checkpoint.
        """
        return self._run(self.ops.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Stores a task's pending writes atomically (special writes overwrite)."""
        self._run(self.ops.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Deletes every checkpoint and write of ``thread_id``."""
        self._run(self.ops.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints and writes of the given runs (reads all metadata)."""
        self._run(self.ops.delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies all checkpoints and writes of one thread into another."""
        self._run(self.ops.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keeps each namespace's latest checkpoint (and what its DeltaChannels need).

        Args:
            thread_ids: Threads to prune.
            strategy: ``"keep_latest"``, or ``"delete"`` (also spelt ``"delete_all"``, as
                langgraph-api does) to remove the threads.

        Raises:
            ValueError: An unknown strategy (nothing is pruned).
        """
        self._run(self.ops.prune(thread_ids, strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """LangGraph's DeltaChannel ancestor walk, a page of ancestors per round trip."""
        return self._run(self.ops.delta_channel_history(config, channels))

    @contextlib.contextmanager
    def lease(
        self,
        thread_id: str,
        *,
        wait: Wait = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[ThreadLease]:
        """Holds ``thread_id`` for one run: one writer per thread.

        Takes the thread's lease (a Redis key in the thread's slot), renews it from a
        background thread while the block runs, and releases it on exit. Pass
        ``lease.bind(config)`` to the run: its writes then land only while it holds the
        lease, else `LeaseLostError` (the sync API cannot cancel the run sooner).

        Args:
            thread_id: The thread to hold.
            wait: False: a busy thread raises at once; True: wait for it; seconds: at most.
            on_wait: Told who holds the thread (``pid N on HOST``) when a wait begins.

        Yields:
            The lease.

        Raises:
            ThreadBusyError: Another run holds the thread (and ``wait`` said not to wait,
                or ran out).
            ValueError: Leases are off (``lease_ttl=None``).

        Example:
            ```python
            with saver.lease("t1") as held:
                graph.invoke(inputs, held.bind({"configurable": {"thread_id": "t1"}}))
            ```
        """
        thread_id, token, ttl_ms = str(thread_id), _new_token(), self._lease_ms()
        started, told = time.monotonic(), False
        while not (state := self._run(self.ops.acquire_lease(thread_id, token, ttl_ms))).acquired:
            pause = self._retry_in(thread_id, state, wait, started)
            if on_wait is not None and not told:
                on_wait(describe_holder(state.holder))
                told = True
            time.sleep(pause)
        held = ThreadLease(thread_id, token)
        stop = threading.Event()
        keeper = threading.Thread(
            target=self._keep, args=(held, ttl_ms, stop), name=f"lease {thread_id}", daemon=True
        )
        keeper.start()
        try:
            yield held
        finally:
            stop.set()
            keeper.join()
            with contextlib.suppress(redis.exceptions.RedisError):
                self._run(self.ops.release_lease(thread_id, token))

    def _keep(self, held: ThreadLease, ttl_ms: int, stop: threading.Event) -> None:
        """Renews the lease until ``stop``; marks it lost when a renewal finds it gone."""
        while not stop.wait(self._renew_every):
            try:
                if not self._run(self.ops.renew_lease(held.thread_id, held.token, ttl_ms)):
                    held.lost = True
                    return
            except redis.exceptions.RedisError as exc:  # the run's own writes report it
                _log.debug("lease renewal of thread %s failed: %s", held.thread_id, exc)


class AsyncRedisSaver(_RedisSaverBase):
    """The asyncio twin of `RedisSaver`, on ``redis.asyncio.Redis``.

    Its sync methods work from other threads while the saver's event loop runs, as
    LangGraph's Postgres and SQLite async savers do, and refuse to block that loop.

    Args:
        client: A ``redis.asyncio.Redis`` (or ``redis.asyncio.cluster.RedisCluster``)
            client created with ``decode_responses=False``.
        ttl: Seconds a thread lives after its last write; None keeps threads.
        key_prefix: Prefix of every key.
        serde: Serializer; LangGraph's default when None.
        lease_ttl: See `RedisSaver`; `alease` holds a thread.

    Example:
        ```python
        async with AsyncRedisSaver.from_conn_string("redis://127.0.0.1:6379/0") as saver:
            graph = builder.compile(checkpointer=saver)
            await graph.ainvoke(inputs, {"configurable": {"thread_id": "t1"}})
        ```
    """

    def __init__(
        self,
        client: aredis.Redis | AsyncRedisCluster,
        *,
        ttl: float | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        serde: SerializerProtocol | None = None,
        lease_ttl: float | None = DEFAULT_LEASE_TTL,
    ) -> None:
        super().__init__(client, ttl=ttl, key_prefix=key_prefix, serde=serde, lease_ttl=lease_ttl)
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        # Hundreds of trajectories finishing together write at once: past the pool's
        # connections they wait their turn instead of failing with "Too many connections".
        limit = _pool_limit(client)
        self._slots: Any = asyncio.Semaphore(limit) if limit else contextlib.nullcontext()

    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(
        cls,
        url: str,
        *,
        ttl: float | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        lease_ttl: float | None = DEFAULT_LEASE_TTL,
    ) -> AsyncIterator[AsyncRedisSaver]:
        """A saver on a new connection pool to ``url``, closed on exit.

        Args:
            url: A redis-py URL such as ``redis://:password@host:6379/0``.
            ttl: See `AsyncRedisSaver`.
            key_prefix: See `AsyncRedisSaver`.
            max_connections: Connections to Redis; more writes at once wait their turn.
            lease_ttl: See `RedisSaver`.

        Yields:
            The saver.
        """
        client = aredis.Redis.from_url(url, **_pool_options(max_connections))
        try:
            yield cls(client, ttl=ttl, key_prefix=key_prefix, lease_ttl=lease_ttl)
        finally:
            await client.aclose()

    async def asetup(self, *, allow_eviction: bool = False) -> None:
        """Checks that Redis answers and keeps what it is given (see `RedisSaver.setup`).

        Raises:
            RedisUnavailableError: If Redis cannot be reached.
            RedisAuthenticationError: If Redis refuses the URL's password or user.
            RedisEvictionPolicyError: If Redis may evict the saver's keys.
        """
        address = _address(self.client)
        await self._run(setup(self.ttl, allow_eviction=allow_eviction, address=address))

    async def _execute(self, batch: Batch) -> list[Any]:
        try:
            try:
                return await self._pipeline(batch, transaction=batch.atomic or batch.snapshot)
            except redis.exceptions.OutOfMemoryError:
                if not batch.snapshot:
                    raise
                return await self._pipeline(batch, transaction=False)  # see `Batch`
        except redis.exceptions.RedisError as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            raise failure from exc

    async def _pipeline(self, batch: Batch, *, transaction: bool) -> list[Any]:
        async with self._slots, self.client.pipeline(transaction=transaction) as pipe:
            for command in batch.commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=not batch.tolerant)

    async def _run(self, op: Op) -> Any:
        reply = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = None if isinstance(step, Emit) else await self._execute(step)

    async def _stream(self, op: Op) -> AsyncIterator[CheckpointTuple]:
        reply = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration:
                return
            if isinstance(step, Emit):
                for item in step.items:
                    yield item
                reply = None
            else:
                reply = await self._execute(step)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint in ``config`` (its latest when no ``checkpoint_id``), or None."""
        return await self._run(self.ops.get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, fetched a page at a time (see `RedisSaver.list`).

        Yields:
            Matching checkpoint tuples.
        """
        op = self.ops.list(config, filter=filter, before=before, limit=limit)
        async for item in self._stream(op):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint atomically; only channels in ``new_versions`` are written.

        Returns:
            The config of the stored checkpoint.
        """
        return await self._run(self.ops.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Stores a task's pending writes atomically (special writes overwrite)."""
        await self._run(self.ops.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Deletes every checkpoint and write of ``thread_id``."""
        await self._run(self.ops.delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints and writes of the given runs (reads all metadata)."""
        await self._run(self.ops.delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies all checkpoints and writes of one thread into another."""
        await self._run(self.ops.copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keeps each namespace's latest checkpoint (see `RedisSaver.prune`)."""
        await self._run(self.ops.prune(thread_ids, strategy))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """LangGraph's DeltaChannel ancestor walk, a page of ancestors per round trip."""
        return await self._run(self.ops.delta_channel_history(config, channels))

    @contextlib.asynccontextmanager
    async def alease(
        self,
        thread_id: str,
        *,
        wait: Wait = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> AsyncIterator[ThreadLease]:
        """Holds ``thread_id`` for one run: one writer per thread (`arun_thread` does this).

        Takes the thread's lease (a Redis key in the thread's slot), renews it from an
        asyncio task while the block runs, and releases it on exit. Pass
        ``lease.bind(config)`` to the run: its writes land only while it holds the lease.
        If a renewal finds the lease lapsed (the process stalled past ``lease_ttl``) or
        taken, the block is cancelled and raises `LeaseLostError`, so a displaced run
        stops asking the model too.

        Args:
            thread_id: The thread to hold.
            wait: False: a busy thread raises at once; True: wait for it; seconds: at most.
            on_wait: Told who holds the thread (``pid N on HOST``) when a wait begins.

        Yields:
            The lease.

        Raises:
            ThreadBusyError: Another run holds the thread (and ``wait`` said not to wait,
                or ran out).
            LeaseLostError: The lease was lost while the block ran.
            ValueError: Leases are off (``lease_ttl=None``).
        """
        thread_id, token, ttl_ms = str(thread_id), _new_token(), self._lease_ms()
        started, told = time.monotonic(), False
        while not (
            state := await self._run(self.ops.acquire_lease(thread_id, token, ttl_ms))
        ).acquired:
            pause = self._retry_in(thread_id, state, wait, started)
            if on_wait is not None and not told:
                on_wait(describe_holder(state.holder))
                told = True
            await asyncio.sleep(pause)
        held = ThreadLease(thread_id, token)
        owner = asyncio.current_task()
        inside, stopped = True, False

        def lost() -> None:
            nonlocal stopped
            held.lost = True
            # Only while the block runs: the keeper runs when the block awaits, so the
            # cancellation lands inside it.
            if inside and owner is not None:
                stopped = True
                owner.cancel()

        keeper = asyncio.create_task(self._akeep(held, ttl_ms, lost))
        try:
            yield held
        except BaseException as exc:
            inside = False
            if not stopped:
                raise
            # The cancellation was ours: the run stopped because it lost the thread.
            raise LeaseLostError(thread_id) from (
                None if isinstance(exc, asyncio.CancelledError) else exc
            )
        finally:
            inside = False
            if stopped and owner is not None:
                owner.uncancel()
            keeper.cancel()  # not awaited: a cancellation of our own must not be swallowed
            with contextlib.suppress(redis.exceptions.RedisError):
                await self._run(self.ops.release_lease(thread_id, token))

    async def _akeep(self, held: ThreadLease, ttl_ms: int, lost: Callable[[], None]) -> None:
        """Renews the lease; calls ``lost`` when a renewal finds it lapsed or taken."""
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                if not await self._run(self.ops.renew_lease(held.thread_id, held.token, ttl_ms)):
                    lost()
                    return
            except redis.exceptions.RedisError as exc:  # the run's own writes report it
                _log.debug("lease renewal of thread %s failed: %s", held.thread_id, exc)

    # -- sync access from other threads ------------------------------------------------

    def _on_loop(self, awaitable: Any) -> Any:
        if self.loop is None:
            awaitable.close()
            raise asyncio.InvalidStateError(
                "AsyncRedisSaver was created outside an event loop: its sync methods need "
                "that loop running; use RedisSaver for sync code"
            )
        with contextlib.suppress(RuntimeError):  # RuntimeError: no loop in this thread
            if asyncio.get_running_loop() is self.loop:
                awaitable.close()
                raise asyncio.InvalidStateError(
                    "sync calls on AsyncRedisSaver from its own event loop would block it: "
                    "use the async methods (ainvoke, aget_state, ...)"
                )
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Sync `aget_tuple`, for other threads than the saver's event loop."""
        return self._on_loop(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Sync `alist`, for other threads than the saver's event loop."""
        items = self.alist(config, filter=filter, before=before, limit=limit)
        while True:
            try:
                yield self._on_loop(anext(items))
            except StopAsyncIteration:
                return

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Sync `aput`, for other threads than the saver's event loop."""
        return self._on_loop(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Sync `aput_writes`, for other threads than the saver's event loop."""
        self._on_loop(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Sync `adelete_thread`, for other threads than the saver's event loop."""
        self._on_loop(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Sync `adelete_for_runs`, for other threads than the saver's event loop."""
        self._on_loop(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Sync `acopy_thread`, for other threads than the saver's event loop."""
        self._on_loop(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Sync `aprune`, for other threads than the saver's event loop."""
        self._on_loop(self.aprune(thread_ids, strategy=strategy))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Sync `aget_delta_channel_history`, for other threads than the saver's loop."""
        return self._on_loop(self.aget_delta_channel_history(config=config, channels=channels))
