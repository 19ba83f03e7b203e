"""`RedisSaver` and `AsyncRedisSaver`: LangGraph checkpoint savers on plain Redis commands.

Each method drives the operation of `pacore_graph.checkpoints.ops` with the same name: a
sync one with `_run` / `_stream`, an async one with `_arun` / `_astream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from typing import Any, Self, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.driver_info import DriverInfo

from pacore_graph.checkpoints import lease
from pacore_graph.checkpoints.errors import (
    RedisAuthenticationError,
    RedisOutOfMemoryError,
    RedisPermissionError,
    RedisUnavailableError,
)
from pacore_graph.checkpoints.layout import Layout
from pacore_graph.checkpoints.lease import DEFAULT_LEASE_TTL, ThreadLease, Wait
from pacore_graph.checkpoints.ops import Batch, Emit, Op, Ops, setup

DEFAULT_PREFIX = "pacore"

DEFAULT_MAX_CONNECTIONS = 32
"""Connections of a saver made by ``from_conn_string``: Redis runs one command at a time,
so more add only their set-up cost."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes naming a Redis Cluster, and the scheme redis-py's Cluster client reads."""

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _cluster_url(url: str) -> tuple[str, bool]:
    """``url`` as redis-py reads it, and whether its scheme names a Cluster."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    return (urlunsplit(parts._replace(scheme=scheme)), True) if scheme else (url, False)


def _cluster_enabled(info: Any) -> bool:
    return isinstance(info, Mapping) and bool(info.get("cluster_enabled"))


def connect(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, **options: Any) -> Any:
    """A sync client for ``url``: a ``RedisCluster`` for ``redis+cluster://`` (or
    ``rediss+cluster://``: any node) or a server in cluster mode, else a ``redis.Redis``.
    ``max_connections`` is per node; ``options`` go to redis-py."""
    plain, cluster = _cluster_url(url)
    if not cluster:
        pool = redis.BlockingConnectionPool.from_url(plain, **_pool(max_connections), **options)
        client = redis.Redis.from_pool(pool)
        with contextlib.suppress(redis.exceptions.RedisError):  # unknown: setup will say
            cluster = _cluster_enabled(client.info("cluster"))
        if not cluster:
            return client
        client.close()
    try:
        return RedisCluster.from_url(plain, max_connections=max_connections, **options)
    except redis.exceptions.RedisClusterException as exc:  # it connects at once
        parts = urlsplit(plain)
        address = f"{parts.scheme}://{parts.hostname}:{parts.port} (cluster)"
        raise RedisUnavailableError(f"Redis at {address} is unreachable: {exc}") from None


async def aconnect(
    url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, **options: Any
) -> Any:
    """`connect` for asyncio: a ``redis.asyncio`` client (or Cluster client) for ``url``."""
    plain, cluster = _cluster_url(url)
    if not cluster:
        pool = aredis.BlockingConnectionPool.from_url(plain, **_pool(max_connections), **options)
        client = aredis.Redis.from_pool(pool)
        with contextlib.suppress(redis.exceptions.RedisError):
            cluster = _cluster_enabled(await client.info("cluster"))
        if not cluster:
            return client
        await client.aclose()
    return AsyncRedisCluster.from_url(plain, max_connections=max_connections, **options)


def _pool(max_connections: int) -> dict[str, Any]:
    """A blocking pool's options: past ``max_connections`` commands wait their turn."""
    # One DriverInfo for the pool: without it redis-py reads its version from the installed
    # package metadata for every new connection (~2 ms each, measured in benchmarks/run.py).
    return {"max_connections": max_connections, "timeout": None, "driver_info": DriverInfo()}


def _connection_kwargs(client: Any) -> dict[str, Any]:
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return dict(pool.connection_kwargs)
    manager = getattr(client, "nodes_manager", None)  # a Cluster client
    return dict(getattr(manager, "connection_kwargs", {}))


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


def _transaction(batch: Batch) -> bool:
    """Whether ``batch`` needs MULTI/EXEC: a snapshot, or a write of several commands."""
    return batch.snapshot or (batch.atomic and len(batch.commands) > 1)


class _WriteQueue:
    """The writes (atomic batches) of an async saver's concurrent operations, sent in order,
    one round trip at a time, each round trip one transaction of every write queued."""

    # A round trip per write (~3.5 MULTI/EXEC commands each) cost 1.23-1.57x the CPU of no
    # saver at N=256 of `benchmarks/run.py --only scale` (5 runs); together, 0.96-1.19x (7).
    LIMIT = 256
    """Writes sent in one round trip at most."""

    def __init__(self) -> None:
        self.queued: list[tuple[Batch, asyncio.Future[list[Any]]]] = []
        self.sender: asyncio.Task[None] | None = None

    def send(self, saver: AsyncRedisSaver, batch: Batch) -> asyncio.Future[list[Any]]:
        """A future of ``batch``'s replies; a command's error fails it, as from a pipeline."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queued.append((batch, future))
        if self.sender is None or self.sender.done() or self.sender.get_loop() is not loop:
            # A context of its own: it outlives the caller, whose context it need not keep.
            self.sender = loop.create_task(self._send(saver), context=contextvars.Context())
        return future

    async def _send(self, saver: AsyncRedisSaver) -> None:
        loop = asyncio.get_running_loop()
        taken: list[tuple[Batch, asyncio.Future[list[Any]]]] = []
        try:
            while self.queued:
                taken, self.queued = self.queued[: self.LIMIT], self.queued[self.LIMIT :]
                # A write whose caller gave up (cancelled) before it was sent is not sent.
                taken = [(b, f) for b, f in taken if not f.done() and f.get_loop() is loop]
                commands = [command for batch, _ in taken for command in batch.commands]
                together = Batch(commands, tolerant=True)
                try:
                    replies = await saver._pipeline(together, transaction=len(commands) > 1)
                except Exception as exc:  # every write fails as the round trip did
                    replies = [exc] * len(commands)
                start = 0
                for batch, future in taken:
                    mine = replies[start : start + len(batch.commands)]
                    start += len(batch.commands)
                    error = next((r for r in mine if isinstance(r, Exception)), None)
                    if future.done():
                        continue
                    if error is None:
                        future.set_result(mine)
                    else:
                        future.set_exception(error)
        finally:  # cancelled (its loop closing): so are the writes it had
            for _, future in taken + self.queued:
                future.cancel()


def _methods(name: str, *, stream: bool = False) -> tuple[Any, Any]:
    """The checkpointer method ``name`` and its async twin, driving `Ops`'s operation."""

    def method(self: RedisSaverBase, *args: Any, **kwargs: Any) -> Any:
        op = getattr(self.ops, name)(*args, **kwargs)
        return self._stream(op) if stream else self._run(op)

    def astream(self: RedisSaverBase, *args: Any, **kwargs: Any) -> Any:
        return self._astream(getattr(self.ops, name)(*args, **kwargs))

    async def arun(self: RedisSaverBase, *args: Any, **kwargs: Any) -> Any:
        return await self._arun(getattr(self.ops, name)(*args, **kwargs))

    pair: tuple[Any, Any] = (method, astream if stream else arun)
    for function, named in zip(pair, (name, f"a{name}"), strict=True):
        # LangGraph reads the signature (whether put_writes takes task_path): the base's.
        declared = getattr(BaseCheckpointSaver, named)
        function.__name__ = function.__qualname__ = named
        function.__doc__ = declared.__doc__
        function.__signature__ = inspect.signature(declared)
    return pair


class RedisSaverBase(BaseCheckpointSaver[str]):
    """What both savers share: options, error messages and every checkpointer method."""

    def __init__(
        self,
        client: Any,
        *,
        ttl: float | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        serde: SerializerProtocol | None = None,
        lease_ttl: float | None = DEFAULT_LEASE_TTL,
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
        self.cluster = isinstance(client, RedisCluster | AsyncRedisCluster)
        self.ops = Ops(Layout(self.serde, key_prefix, ttl), cluster=self.cluster)
        self._writes = _WriteQueue()  # an async saver's; its clones share it
        self.loop: asyncio.AbstractEventLoop | None = None  # what an async saver's sync calls use
        with contextlib.suppress(RuntimeError):
            self.loop = asyncio.get_running_loop()

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> Self:
        """A shallow clone whose serializer allows ``extra_allowlist`` (see LangGraph)."""
        # LangGraph returns ``self`` or ``copy.copy(self)``: the same class.
        clone = cast(Self, super().with_allowlist(extra_allowlist))
        if clone is not self:  # it encodes with its own serializer
            clone.ops = Ops(Layout(clone.serde, self.key_prefix, self.ttl), cluster=self.cluster)
        return clone

    def get_next_version(self, current: str | None, channel: None) -> str:
        """`InMemorySaver`'s version scheme: a zero-padded counter, a random tie-breaker."""
        return InMemorySaver.get_next_version(self, current, channel)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turns what Redis refused into the saver's one-line errors."""
        try:
            yield
        except (
            RedisUnavailableError,
            RedisAuthenticationError,
            RedisPermissionError,
            RedisOutOfMemoryError,
        ):
            raise
        except redis.exceptions.RedisClusterException as exc:  # no node of it answers
            address = _address(self.client)
            raise RedisUnavailableError(f"Redis at {address} is unreachable: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            address, text = _address(self.client), str(exc)
            # Redis >= 6 refuses a bad password at connect; older ones answer NOAUTH per command.
            if isinstance(exc, redis.exceptions.AuthenticationError) or text.startswith("NOAUTH"):
                why = (
                    "wrong password or user in the URL"
                    if _connection_kwargs(self.client).get("password")
                    else "it needs a password: redis://:PASSWORD@host:port/db"
                )
                raise RedisAuthenticationError(
                    f"Redis at {address}: authentication failed ({why})"
                ) from exc
            if isinstance(exc, _CONNECTION_ERRORS):
                raise RedisUnavailableError(f"Redis at {address} is unreachable: {exc}") from exc
            if isinstance(exc, redis.exceptions.NoPermissionError):
                raise RedisPermissionError(
                    f"Redis at {address}: {text}: grant it (ACL SETUSER)"
                ) from exc
            if isinstance(exc, redis.exceptions.OutOfMemoryError):
                # Redis's message names the refused command and its arguments: data, not logs.
                raise RedisOutOfMemoryError(
                    f"Redis at {address} is out of memory (used memory is over maxmemory and "
                    "its maxmemory-policy evicts none of these keys), so it refused a checkpoint "
                    "write: raise maxmemory (CONFIG SET maxmemory ...) or free memory"
                ) from exc
            moved = isinstance(exc, redis.exceptions.MovedError) or "CROSSSLOT" in text
            if moved and not self.cluster:
                raise redis.exceptions.ResponseError(
                    f"Redis at {address} is a node of a Redis Cluster: connect to it as one "
                    f"(redis+cluster://host:port, or a RedisCluster client)"
                ) from exc
            raise

    def _setup_op(self, allow_eviction: bool) -> Op:
        user = _connection_kwargs(self.client).get("username") or "default"
        return setup(
            self.ttl,
            allow_eviction=allow_eviction,
            address=_address(self.client),
            user=None if self.lease_ttl is None else user,
        )

    def _run(self, op: Op) -> Any:
        raise NotImplementedError

    def _stream(self, op: Op) -> Iterator[CheckpointTuple]:
        raise NotImplementedError

    async def _arun(self, op: Op) -> Any:
        op.close()
        raise NotImplementedError("RedisSaver is sync: use AsyncRedisSaver in async code")

    def _astream(self, op: Op) -> AsyncIterator[CheckpointTuple]:
        op.close()
        raise NotImplementedError("RedisSaver is sync: use AsyncRedisSaver in async code")

    def setup(self, *, allow_eviction: bool = False) -> None:
        """Checks that Redis answers, runs the saver's Lua scripts and keeps what it is given
        (plain Redis needs no index or schema).

        Args:
            allow_eviction: Accept a ``maxmemory-policy`` that may evict the saver's keys
                (``allkeys-*``; ``volatile-*`` when ``ttl`` is set), which damages threads.

        Raises:
            RedisUnavailableError, RedisAuthenticationError, RedisPermissionError: Redis
                cannot be reached, refuses the URL's password or user, or a scripting command.
            RedisEvictionPolicyError: If Redis may evict the saver's keys.
        """
        self._run(self._setup_op(allow_eviction))

    async def asetup(self, *, allow_eviction: bool = False) -> None:
        """Async `setup`."""
        await self._arun(self._setup_op(allow_eviction))

    get_tuple, aget_tuple = _methods("get_tuple")
    list, alist = _methods("list", stream=True)
    put, aput = _methods("put")
    put_writes, aput_writes = _methods("put_writes")
    delete_thread, adelete_thread = _methods("delete_thread")
    delete_for_runs, adelete_for_runs = _methods("delete_for_runs")
    copy_thread, acopy_thread = _methods("copy_thread")
    prune, aprune = _methods("prune")
    get_delta_channel_history, aget_delta_channel_history = _methods("get_delta_channel_history")


class RedisSaver(RedisSaverBase):
    """A synchronous LangGraph checkpoint saver on Redis 7+, Valkey, managed Redis or Redis
    Cluster, without modules. Every write is one transaction.

    Args:
        client: A ``redis.Redis`` (or ``redis.cluster.RedisCluster``) client created
            with ``decode_responses=False``; on a ``BlockingConnectionPool`` (as `connect`
            makes) commands past its size wait their turn.
        ttl: Seconds a thread lives after its last write; None keeps it until deleted.
        key_prefix: Prefix of every key, so several apps can share one database.
        serde: Serializer; LangGraph's default when None.
        lease_ttl: Seconds a thread's lease (`lease`) outlives its holder's last renewal:
            how soon a dead run's thread is free again; None turns leases off.

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
        """A saver on a new connection pool to ``url`` (see `connect`), closed on exit.

        Args:
            url: ``redis://:password@host:6379/0``, or ``redis+cluster://host:port`` for a
                Redis Cluster (detected on a ``redis://`` URL too).
            max_connections: Connections to Redis; more writes at once wait their turn.
            ttl, key_prefix, lease_ttl: See `RedisSaver`.
        """
        client = connect(url, max_connections=max_connections)
        try:
            yield cls(client, ttl=ttl, key_prefix=key_prefix, lease_ttl=lease_ttl)
        finally:
            client.close()

    def _execute(self, batch: Batch) -> list[Any]:
        with self._errors():
            try:
                return self._pipeline(batch, transaction=_transaction(batch))
            except redis.exceptions.OutOfMemoryError:
                if not batch.snapshot:
                    raise
                return self._pipeline(batch, transaction=False)  # see `Batch`

    def _pipeline(self, batch: Batch, *, transaction: bool) -> list[Any]:
        with self.client.pipeline(transaction=transaction) as pipe:
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

    def lease(
        self,
        thread_id: str,
        *,
        wait: Wait = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> contextlib.AbstractContextManager[ThreadLease]:
        """Holds ``thread_id`` for one run (one writer per thread): takes the thread's lease,
        renews it from a background thread and releases it on exit. The writes of a run
        given ``lease.bind(config)`` land only while it holds the lease, else
        `LeaseLostError`. ``wait`` for a busy thread: False raises at once, True waits for
        it, seconds at most that long; ``on_wait`` is told who holds it (``pid N on HOST``).

        Raises:
            ThreadBusyError: Another run holds the thread (and ``wait`` said not to wait,
                or ran out).
            ValueError: Leases are off (``lease_ttl=None``).
        """
        return lease.hold(self, thread_id, wait, on_wait)


class AsyncRedisSaver(RedisSaverBase):
    """The asyncio twin of `RedisSaver`, on a ``redis.asyncio.Redis`` (or
    ``redis.asyncio.cluster.RedisCluster``) ``client`` created with ``decode_responses=False``;
    the other arguments are `RedisSaver`'s. Its sync methods work from other threads while
    the saver's event loop runs, and refuse to block that loop."""

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
        """`RedisSaver.from_conn_string` for asyncio (see `aconnect`)."""
        client = await aconnect(url, max_connections=max_connections)
        try:
            yield cls(client, ttl=ttl, key_prefix=key_prefix, lease_ttl=lease_ttl)
        finally:
            await client.aclose()

    async def _execute(self, batch: Batch) -> list[Any]:
        with self._errors():
            if batch.atomic and not self.cluster:
                return await self._writes.send(self, batch)
            try:
                return await self._pipeline(batch, transaction=_transaction(batch))
            except redis.exceptions.OutOfMemoryError:
                if not batch.snapshot:
                    raise
                return await self._pipeline(batch, transaction=False)  # see `Batch`

    async def _pipeline(self, batch: Batch, *, transaction: bool) -> list[Any]:
        async with self.client.pipeline(transaction=transaction) as pipe:
            for command in batch.commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=not batch.tolerant)

    async def _arun(self, op: Op) -> Any:
        reply = None
        while True:
            try:
                step = op.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = None if isinstance(step, Emit) else await self._execute(step)

    async def _astream(self, op: Op) -> AsyncIterator[CheckpointTuple]:
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

    def _run(self, op: Op) -> Any:
        return self._on_loop(self._arun(op))

    def _stream(self, op: Op) -> Iterator[CheckpointTuple]:
        items = self._astream(op)
        while True:
            try:
                yield self._on_loop(anext(items))
            except StopAsyncIteration:
                return

    def _on_loop(self, awaitable: Any) -> Any:
        """Runs ``awaitable`` on the saver's loop from another thread, and waits for it."""
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

    def alease(
        self,
        thread_id: str,
        *,
        wait: Wait = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[ThreadLease]:
        """`RedisSaver.lease` for asyncio (`arun_thread` does this), renewed by a task: when
        a renewal finds the lease lapsed or taken, the block is cancelled and raises
        `LeaseLostError` (`ThreadLostError` if Redis lost the thread with it), so a
        displaced run stops asking the model too.
        """
        return lease.ahold(self, thread_id, wait, on_wait)
