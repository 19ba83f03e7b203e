"""`RedisSaver` and `AsyncRedisSaver`: LangGraph checkpoint savers on plain Redis commands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio as aredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pacore_graph.checkpoints.layout import Batch, Layout, Op, next_version

DEFAULT_PREFIX = "pacore"


class RedisUnavailableError(ConnectionError):
    """Redis cannot be reached; the message names the server (never its password)."""


def _where(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def _unavailable(client: Any, exc: Exception) -> RedisUnavailableError:
    return RedisUnavailableError(f"Redis at {_where(client)} is unreachable: {exc}")


class RedisSaver(BaseCheckpointSaver[str]):
    """A synchronous checkpoint saver on any Redis-protocol server, no modules needed.

    Args:
        client: A ``redis.Redis`` client (its ``decode_responses`` must be False).
        ttl: Seconds a thread's keys live after its last write; None keeps them.
        key_prefix: Prefix of every key, so several apps can share one database.
        serde: Serializer; LangGraph's default when None.

    Example:
        ```python
        with RedisSaver.from_conn_string("redis://127.0.0.1:6379/0") as saver:
            graph = builder.compile(checkpointer=saver)
        ```
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl: float | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self.layout = Layout(self.serde, key_prefix, ttl)

    @classmethod
    @contextlib.contextmanager
    def from_conn_string(
        cls, url: str, *, ttl: float | None = None, key_prefix: str = DEFAULT_PREFIX
    ) -> Iterator[RedisSaver]:
        """A saver on a new connection pool to ``url``, closed on exit."""
        client = redis.Redis.from_url(url)
        try:
            yield cls(client, ttl=ttl, key_prefix=key_prefix)
        finally:
            client.close()

    def setup(self) -> None:
        """Checks the connection; plain Redis needs no index or schema."""
        self._run(_ping())

    def _run(self, op: Op) -> Any:
        try:
            batch = next(op)
            while True:
                pipe = self.client.pipeline(transaction=batch.atomic)
                for command in batch.commands:
                    pipe.execute_command(*command)
                batch = op.send(pipe.execute())
        except StopIteration as stop:
            return stop.value
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise _unavailable(self.client, exc) from exc

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self.layout.get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._run(self.layout.list(config, filter=filter, before=before, limit=limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self.layout.put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(self.layout.put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self.layout.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self.layout.delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self.layout.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(self.layout.prune(thread_ids, strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        return next_version(current)


class AsyncRedisSaver(BaseCheckpointSaver[str]):
    """The asyncio twin of `RedisSaver`, on ``redis.asyncio.Redis``.

    The sync methods work from other threads while the saver's loop runs (as
    LangGraph's other async savers do), and refuse to block that loop itself.

    Example:
        ```python
        async with AsyncRedisSaver.from_conn_string("redis://127.0.0.1:6379/0") as saver:
            graph = builder.compile(checkpointer=saver)
            await graph.ainvoke(x, {"configurable": {"thread_id": "t1"}})
        ```
    """

    def __init__(
        self,
        client: aredis.Redis,
        *,
        ttl: float | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self.layout = Layout(self.serde, key_prefix, ttl)
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(
        cls, url: str, *, ttl: float | None = None, key_prefix: str = DEFAULT_PREFIX
    ) -> AsyncIterator[AsyncRedisSaver]:
        """A saver on a new connection pool to ``url``, closed on exit."""
        client = aredis.Redis.from_url(url)
        try:
            yield cls(client, ttl=ttl, key_prefix=key_prefix)
        finally:
            await client.aclose()

    async def asetup(self) -> None:
        """Checks the connection; plain Redis needs no index or schema."""
        await self._run(_ping())

    async def _run(self, op: Op) -> Any:
        try:
            batch = next(op)
            while True:
                pipe = self.client.pipeline(transaction=batch.atomic)
                for command in batch.commands:
                    pipe.execute_command(*command)
                batch = op.send(await pipe.execute())
        except StopIteration as stop:
            return stop.value
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise _unavailable(self.client, exc) from exc

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._run(self.layout.get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._run(
            self.layout.list(config, filter=filter, before=before, limit=limit)
        ):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._run(self.layout.put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._run(self.layout.put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._run(self.layout.delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._run(self.layout.delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._run(self.layout.copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._run(self.layout.prune(thread_ids, strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        return next_version(current)

    # Sync access from another thread, as LangGraph's other async savers allow.
    def _sync(self, coro: Any) -> Any:
        if self.loop is None:
            coro.close()
            raise RuntimeError("AsyncRedisSaver's sync methods need its event loop running")
        try:
            if asyncio.get_running_loop() is self.loop:
                coro.close()
                raise asyncio.InvalidStateError(
                    "sync calls on AsyncRedisSaver from its own event loop would deadlock: "
                    "use the async methods (ainvoke, aget_state, ...)"
                )
        except RuntimeError:
            pass
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._sync(
            self._run(self.layout.list(config, filter=filter, before=before, limit=limit))
        )

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))


def _ping() -> Op:
    batch = Batch()
    batch.add("PING")
    yield batch
