"""Key layout and the saver's operations, written once for the sync and async savers.

Every operation is a generator that yields batches of Redis commands and receives
their replies; `RedisSaver` runs the batches on a sync client, `AsyncRedisSaver` on
an async one. Plain commands only (strings, hashes, sets, sorted sets, MULTI/EXEC),
so the layout works on Redis 7, Valkey, managed Redis and Redis Cluster.

Keys of one thread share the hash tag ``{thread_id}`` and so one Cluster slot:

    {prefix}:{t}:ns              set of checkpoint namespaces
    {prefix}:{t}:ids:{ns}        sorted set (score 0) of checkpoint ids; lex = time order
    {prefix}:{t}:cp:{ns}         hash id -> parent id, serialized checkpoint (no values)
    {prefix}:{t}:meta:{ns}       hash id -> serialized metadata
    {prefix}:{t}:blobs:{ns}      hash channel\\0version -> serialized channel value
    {prefix}:{t}:writes:{ns}:{id} hash task\\0idx -> path, channel, serialized value
    {prefix}:threads             set of thread ids (for list() across threads only)

Channel values live per (channel, version), so a checkpoint stores only what
changed since its parent; PaCoRe's trajectories are a DeltaChannel and so exist
only as their tasks' writes.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

SEP = b"\x00"


@dataclass
class Batch:
    """Commands sent in one round trip; ``atomic`` wraps them in MULTI/EXEC."""

    commands: list[tuple[Any, ...]] = field(default_factory=list)
    atomic: bool = False

    def add(self, *command: Any) -> None:
        self.commands.append(command)


Op = Generator[Batch, list[Any], Any]
"""A saver operation: yields batches, receives each batch's replies, returns its result."""


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


class Layout:
    """Keys, serialization and the operations of one saver.

    Args:
        serde: LangGraph's serializer for checkpoints, metadata and values.
        key_prefix: Prefix of every key.
        ttl: Seconds a thread's keys live after their last write; None keeps them.
    """

    def __init__(self, serde: SerializerProtocol, key_prefix: str, ttl: float | None) -> None:
        self.serde = serde
        self.prefix = key_prefix
        self.ttl = ttl
        self._registered: set[str] = set()

    # -- keys ------------------------------------------------------------------------

    def key(self, thread_id: str, *parts: str) -> str:
        """A key of ``thread_id``; the ``{...}`` hash tag pins a thread to one Cluster slot."""
        return ":".join((self.prefix, "{" + thread_id + "}", *parts))

    @property
    def threads_key(self) -> str:
        """The registry of thread ids."""
        return f"{self.prefix}:threads"

    # -- serialization ---------------------------------------------------------------

    def dump(self, obj: Any) -> bytes:
        kind, data = self.serde.dumps_typed(obj)
        return kind.encode() + SEP + data

    def load(self, raw: bytes) -> Any:
        kind, _, data = raw.partition(SEP)
        return self.serde.loads_typed((kind.decode(), data))

    def _expire(self, batch: Batch, keys: Iterable[str]) -> None:
        if self.ttl is not None:
            for key in keys:
                batch.add("PEXPIRE", key, int(self.ttl * 1000))

    # -- put -------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op:
        """Stores a checkpoint and the channel values that changed with it."""
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        parent = conf.get("checkpoint_id") or ""
        values = checkpoint["channel_values"]
        stored = {**checkpoint, "channel_values": {}}
        k = lambda *p: self.key(thread_id, *p)  # noqa: E731
        batch = Batch(atomic=True)
        blobs = {
            f"{channel}\x00{version}": self.dump(values[channel])
            if channel in values
            else b"empty" + SEP
            for channel, version in new_versions.items()
        }
        if blobs:
            batch.add("HSET", k("blobs", ns), *[x for kv in blobs.items() for x in kv])
        batch.add("HSET", k("cp", ns), checkpoint["id"], parent.encode() + SEP + self.dump(stored))
        batch.add(
            "HSET",
            k("meta", ns),
            checkpoint["id"],
            self.dump(get_checkpoint_metadata(config, metadata)),
        )
        batch.add("ZADD", k("ids", ns), 0, checkpoint["id"])
        batch.add("SADD", k("ns"), ns)
        self._expire(batch, [k("blobs", ns), k("cp", ns), k("meta", ns), k("ids", ns), k("ns")])
        yield batch
        if thread_id not in self._registered:
            # Its own round trip: in a Cluster the registry lives in another slot.
            reg = Batch()
            reg.add("SADD", self.threads_key, thread_id)
            yield reg
            self._registered.add(thread_id)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> Op:
        """Stores a task's writes; special writes (errors, interrupts) overwrite, others don't."""
        conf = config["configurable"]
        key = self.key(
            conf["thread_id"], "writes", conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        )
        batch = Batch(atomic=True)
        for idx, (channel, value) in enumerate(writes):
            index = WRITES_IDX_MAP.get(channel, idx)
            fld = f"{task_id}\x00{index}"
            raw = task_path.encode() + SEP + channel.encode() + SEP + self.dump(value)
            batch.add("HSET" if channel in WRITES_IDX_MAP else "HSETNX", key, fld, raw)
        self._expire(batch, [key])
        yield batch

    # -- read ------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> Op:
        """The checkpoint named in ``config``, or the thread's latest in its namespace."""
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            batch = Batch()
            batch.add("ZRANGE", self.key(thread_id, "ids", ns), -1, -1)
            (ids,) = yield batch
            if not ids:
                return None
            checkpoint_id = _text(ids[0])
        tuples = yield from self._load(thread_id, [(ns, checkpoint_id)])
        return tuples[0] if tuples else None

    def _load(self, thread_id: str, refs: list[tuple[str, str]]) -> Op:
        """Full tuples for (namespace, id) pairs in two round trips; missing ones are skipped."""
        if not refs:
            return []
        batch = Batch()
        for ns, cid in refs:
            batch.add("HGET", self.key(thread_id, "cp", ns), cid)
            batch.add("HGET", self.key(thread_id, "meta", ns), cid)
            batch.add("HGETALL", self.key(thread_id, "writes", ns, cid))
        replies = yield batch
        found = []
        blob_batch = Batch()
        for i, (ns, cid) in enumerate(refs):
            raw_cp, raw_meta, raw_writes = replies[3 * i : 3 * i + 3]
            if raw_cp is None:
                continue
            parent, _, body = raw_cp.partition(SEP)
            checkpoint: Checkpoint = self.load(body)
            fields = [f"{ch}\x00{ver}" for ch, ver in checkpoint["channel_versions"].items()]
            if fields:
                blob_batch.add("HMGET", self.key(thread_id, "blobs", ns), *fields)
            found.append((ns, cid, _text(parent), checkpoint, raw_meta, raw_writes, fields))
        blob_replies = (yield blob_batch) if blob_batch.commands else []
        out = []
        blob_iter = iter(blob_replies)
        for ns, cid, parent, checkpoint, raw_meta, raw_writes, fields in found:
            values = next(blob_iter) if fields else []
            channel_values = {}
            for fld, raw in zip(fields, values, strict=True):
                if raw is not None and not raw.startswith(b"empty" + SEP):
                    channel_values[fld.partition("\x00")[0]] = self.load(raw)
            checkpoint["channel_values"] = channel_values
            out.append(
                CheckpointTuple(
                    config={
                        "configurable": {
                            "thread_id": thread_id,
                            "checkpoint_ns": ns,
                            "checkpoint_id": cid,
                        }
                    },
                    checkpoint=checkpoint,
                    metadata=self.load(raw_meta) if raw_meta else {},
                    parent_config=(
                        {
                            "configurable": {
                                "thread_id": thread_id,
                                "checkpoint_ns": ns,
                                "checkpoint_id": parent,
                            }
                        }
                        if parent
                        else None
                    ),
                    pending_writes=self._writes(raw_writes),
                )
            )
        return out

    def _writes(self, raw: dict[bytes, bytes]) -> list[tuple[str, str, Any]]:
        rows = []
        for fld, value in raw.items():
            task_id, _, idx = fld.partition(SEP)
            path, _, rest = value.partition(SEP)
            channel, _, data = rest.partition(SEP)
            rows.append((path, task_id.decode(), int(idx), channel.decode(), data))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return [(task, channel, self.load(data)) for _, task, _, channel, data in rows]

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Op:
        """Checkpoints newest first; only the threads and namespaces asked for are read."""
        conf = (config or {}).get("configurable", {})
        if conf.get("thread_id"):
            threads = [conf["thread_id"]]
        else:
            batch = Batch()
            batch.add("SMEMBERS", self.threads_key)
            (members,) = yield batch
            threads = sorted(_text(m) for m in members)
        before_id = get_checkpoint_id(before) if before else None
        wanted_id = get_checkpoint_id(config) if config else None
        out: list[CheckpointTuple] = []
        for thread_id in threads:
            if limit is not None and len(out) >= limit:
                break
            if "checkpoint_ns" in conf:
                namespaces = [conf["checkpoint_ns"]]
            else:
                batch = Batch()
                batch.add("SMEMBERS", self.key(thread_id, "ns"))
                (members,) = yield batch
                namespaces = [_text(m) for m in members]
            batch = Batch()
            for ns in namespaces:
                batch.add("ZRANGE", self.key(thread_id, "ids", ns), 0, -1)
            replies = yield batch
            refs = [
                (ns, _text(cid)) for ns, ids in zip(namespaces, replies, strict=True) for cid in ids
            ]
            refs = [
                r
                for r in refs
                if (wanted_id is None or r[1] == wanted_id)
                and (before_id is None or r[1] < before_id)
            ]
            refs.sort(key=lambda r: r[1], reverse=True)
            if filter:
                refs = yield from self._matching(thread_id, refs, filter)
            if limit is not None:
                refs = refs[: limit - len(out)]
            out.extend((yield from self._load(thread_id, refs)))
        return out

    def _matching(self, thread_id: str, refs: list[tuple[str, str]], filter: dict[str, Any]) -> Op:
        if not refs:
            return []
        batch = Batch()
        for ns, cid in refs:
            batch.add("HGET", self.key(thread_id, "meta", ns), cid)
        replies = yield batch
        return [
            ref
            for ref, raw in zip(refs, replies, strict=True)
            if raw is not None and all(self.load(raw).get(k) == v for k, v in filter.items())
        ]

    # -- delete, copy, prune -----------------------------------------------------------

    def _thread_keys(self, thread_id: str) -> Op:
        """Every key of a thread, found through its indexes (no keyspace scan)."""
        batch = Batch()
        batch.add("SMEMBERS", self.key(thread_id, "ns"))
        (members,) = yield batch
        namespaces = [_text(m) for m in members]
        batch = Batch()
        for ns in namespaces:
            batch.add("ZRANGE", self.key(thread_id, "ids", ns), 0, -1)
        replies = yield batch
        keys = [self.key(thread_id, "ns")]
        for ns, ids in zip(namespaces, replies, strict=True):
            keys += [self.key(thread_id, part, ns) for part in ("ids", "cp", "meta", "blobs")]
            keys += [self.key(thread_id, "writes", ns, _text(cid)) for cid in ids]
        return keys

    def delete_thread(self, thread_id: str) -> Op:
        """Removes every checkpoint and write of a thread."""
        keys = yield from self._thread_keys(thread_id)
        batch = Batch(atomic=True)
        batch.add("DEL", *keys)
        yield batch
        reg = Batch()
        reg.add("SREM", self.threads_key, thread_id)
        yield reg
        self._registered.discard(thread_id)

    def _drop(self, thread_id: str, refs: list[tuple[str, str]]) -> Op:
        if not refs:
            return
        batch = Batch(atomic=True)
        for ns, cid in refs:
            batch.add("ZREM", self.key(thread_id, "ids", ns), cid)
            batch.add("HDEL", self.key(thread_id, "cp", ns), cid)
            batch.add("HDEL", self.key(thread_id, "meta", ns), cid)
            batch.add("DEL", self.key(thread_id, "writes", ns, cid))
        yield batch

    def delete_for_runs(self, run_ids: Sequence[str]) -> Op:
        """Removes the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        wanted = set(run_ids)
        tuples = yield from self.list(None)
        by_thread: dict[str, list[tuple[str, str]]] = {}
        for t in tuples:
            if t.metadata.get("run_id") in wanted:
                c = t.config["configurable"]
                by_thread.setdefault(c["thread_id"], []).append(
                    (c["checkpoint_ns"], c["checkpoint_id"])
                )
        for thread_id, refs in by_thread.items():
            yield from self._drop(thread_id, refs)

    def prune(self, thread_ids: Sequence[str], strategy: str = "keep_latest") -> Op:
        """``keep_latest``: only each namespace's newest checkpoint stays; ``delete``: all go."""
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use keep_latest or delete")
        for thread_id in thread_ids:
            if strategy == "delete":
                yield from self.delete_thread(thread_id)
                continue
            tuples = yield from self.list({"configurable": {"thread_id": thread_id}})
            seen: set[str] = set()
            stale = []
            for t in tuples:  # newest first
                c = t.config["configurable"]
                if c["checkpoint_ns"] in seen:
                    stale.append((c["checkpoint_ns"], c["checkpoint_id"]))
                seen.add(c["checkpoint_ns"])
            yield from self._drop(thread_id, stale)

    def copy_thread(self, source: str, target: str) -> Op:
        """Copies every checkpoint, value and write of ``source`` into ``target``."""
        keys = yield from self._thread_keys(source)
        batch = Batch()
        for key in keys:
            batch.add("DUMP", key)
        dumps = yield batch
        batch = Batch(atomic=True)
        src_tag = self.key(source, "")
        for key, raw in zip(keys, dumps, strict=True):
            if raw is None:
                continue
            new_key = self.key(target, "") + key[len(src_tag) :]
            ttl = int(self.ttl * 1000) if self.ttl is not None else 0
            batch.add("RESTORE", new_key, ttl, raw, "REPLACE")
        if batch.commands:
            yield batch
            reg = Batch()
            reg.add("SADD", self.threads_key, target)
            yield reg


def next_version(current: str | None) -> str:
    """LangGraph's version scheme: a zero-padded counter and a random tie-breaker."""
    if current is None:
        current_v = 0
    elif isinstance(current, int):
        current_v = current
    else:
        current_v = int(current.split(".")[0])
    return f"{current_v + 1:032}.{random.random():016}"
