"""The savers' operations, written once for the sync and the async saver.

Each operation is a generator: it yields a `Batch` of Redis commands and receives its
replies, or yields `Emit` to hand checkpoint tuples to the caller, and returns its result.
Plain commands only, plus one Lua script: a write carrying a lease token
(`LEASE_CONFIG_KEY`) lands only while the thread's lease holds that token. Every
transaction names keys of one thread only, so the layout runs on Redis Cluster too.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)

from pacore_graph.checkpoints.errors import (
    RedisEvictionPolicyError,
    RedisPermissionError,
    ThreadLostError,
)
from pacore_graph.checkpoints.layout import HASHES, LEASE, LEASE_CONFIG_KEY, SORTED_SETS, Layout
from pacore_graph.errors import DamagedThreadError, LeaseLostError

PAGE = 64
"""Checkpoints (or threads) handled per round trip."""

PRUNE_STRATEGIES = ("keep_latest", "delete", "delete_all")
"""What ``prune`` accepts: LangGraph's ``"delete"`` is langgraph-api's ``"delete_all"``."""

REGISTRY_GRACE_S = 60
"""Seconds past its expiry a thread stays in the registry (client clock skew)."""

ROLES = {
    "ids": "checkpoint index",
    "cp": "checkpoints",
    "meta": "checkpoint metadata",
    "blobs": "channel values",
    "writes": "pending writes",
    "wix": "pending-write index",
}
"""What each of a thread's keys holds, for the messages of `DamagedThreadError`."""

SIZED = {"ids": "ZCARD", "cp": "HLEN", "meta": "HLEN", "writes": "HLEN", "wix": "ZCARD"}
"""The keys whose sizes a load reads first (then whether ``blobs`` exists)."""

RETURN_1_SHA = hashlib.sha1(b"return 1").hexdigest()

log = logging.getLogger(__name__)


FENCED_WRITE = """
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] then
  if holder or redis.call('EXISTS', unpack(KEYS, 2, 7)) > 0 then return 0 end
  return -1
end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""
"""A write's commands (ARGV: token, then each command as its length and words; Lua's unpack
takes ~8000 words each), run only while KEYS[1], the lease, holds the token; else 0, or -1
when the thread's six keys (KEYS[2..7]) are gone too. KEYS lists every key touched."""


@dataclass
class Batch:
    """Commands sent in one round trip. An ``atomic`` batch is a write, applied as a whole
    (in MULTI/EXEC unless it is one command); the async saver sends concurrent ones together.

    A ``snapshot`` read uses MULTI/EXEC too, but falls back to a plain pipeline on a Redis
    out of memory (it refuses MULTI, and every write, so nothing moves meanwhile). A
    ``tolerant`` batch gets a command's error back as its reply instead of raising.
    """

    commands: list[tuple[Any, ...]] = field(default_factory=list)
    atomic: bool = False
    snapshot: bool = False
    tolerant: bool = False

    def add(self, *command: Any) -> None:
        self.commands.append(command)


class Emit(NamedTuple):
    """Checkpoint tuples an operation hands to its caller before it goes on."""

    items: list[CheckpointTuple]


Op = Generator[Batch | Emit, Any, Any]


class _Visit(NamedTuple):
    checkpoint_id: str
    seeds: dict[str, bytes]  # channel -> stored value that ends that channel's walk here
    writes: list[tuple[bytes, bytes | None]]  # (writes field, payload)


class Ops:
    """Every operation of a saver, over one `Layout`; on a Redis ``cluster`` the registry
    (another slot) gets its own round trip."""

    def __init__(self, layout: Layout, *, cluster: bool = False) -> None:
        self.layout = layout
        self.cluster = cluster

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op:
        """Stores a checkpoint and the values of the channels in ``new_versions``."""
        layout = self.layout
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id, parent = checkpoint["id"], conf.get("checkpoint_id") or ""
        values = checkpoint["channel_values"]
        batch = Batch(atomic=True)
        if new_versions:
            blobs: list[Any] = []
            for channel, version in new_versions.items():
                value = layout.dump(values[channel]) if channel in values else b""
                blobs += [layout.field(ns, channel, str(version)), value]
            batch.add("HSET", layout.key(thread_id, "blobs"), *blobs)
        cp_field = layout.field(ns, checkpoint_id)
        stored = {**checkpoint, "channel_values": {}}
        batch.add("HSET", layout.key(thread_id, "cp"), cp_field, layout.dump(stored))
        meta = layout.dump(get_checkpoint_metadata(config, metadata))
        batch.add("HSET", layout.key(thread_id, "meta"), cp_field, meta)
        # One member per checkpoint, even if it is put again with another parent.
        batch.add(
            "ZREMRANGEBYLEX", layout.key(thread_id, "ids"), *layout.lex_range(ns, checkpoint_id)
        )
        batch.add("ZADD", layout.key(thread_id, "ids"), 0, layout.field(ns, checkpoint_id, parent))
        yield from self._write(thread_id, conf.get(LEASE_CONFIG_KEY), batch)
        return _config(thread_id, ns, checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> Op:
        """Stores a task's writes against the checkpoint in ``config``.

        A special write (error, interrupt, ...) replaces an earlier one; a regular write
        keeps the first value stored for its (task, index), as a retried task must not
        change what an earlier attempt recorded.
        """
        if not writes:
            return
        layout = self.layout
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id = conf["checkpoint_id"]
        batch = Batch(atomic=True)
        writes_key = layout.key(thread_id, "writes")
        members: builtins.list[Any] = []  # of the pending-write index: score, field, ...
        for idx, (channel, value) in enumerate(writes):
            fld = layout.field(ns, checkpoint_id, task_id, str(WRITES_IDX_MAP.get(channel, idx)))
            payload = b"\x00".join((task_path.encode(), channel.encode(), layout.dump(value)))
            batch.add("HSET" if channel in WRITES_IDX_MAP else "HSETNX", writes_key, fld, payload)
            members += (0, fld)
        batch.add("ZADD", layout.key(thread_id, "wix"), *members)
        yield from self._write(thread_id, conf.get(LEASE_CONFIG_KEY), batch, register=False)

    def _write(
        self, thread_id: str, token: str | None, batch: Batch, *, register: bool = True
    ) -> Op:
        """Commits a write, refreshing every key's TTL (a thread expires as a unit) and the
        thread's registry entry (without a TTL it never changes: only a ``register`` write
        sets it); fenced by the run's lease when ``token`` is given.

        Raises:
            LeaseLostError: The lease no longer holds ``token``; nothing was written.
            ThreadLostError: The thread is gone with the lease: Redis lost its data.
        """
        layout = self.layout
        registry: tuple[Any, ...] = ()
        if layout.ttl is not None:
            for key in layout.keys(thread_id):
                batch.add("PEXPIRE", key, layout.ttl_ms)
            registry = ("ZADD", layout.threads_key, time.time() + layout.ttl, thread_id)
        elif register:
            registry = ("ZADD", layout.threads_key, "+inf", thread_id)
        if registry and not self.cluster:
            batch.add(*registry)
        if token is None:
            yield batch
        else:
            keys = dict.fromkeys([*layout.keys(thread_id), *(cmd[1] for cmd in batch.commands)])
            words: builtins.list[Any] = [token]
            for command in batch.commands:
                words += [len(command), *command]
            lease = layout.key(thread_id, LEASE)
            fenced = ("EVAL", FENCED_WRITE, 1 + len(keys), lease, *keys, *words)
            (held,) = yield Batch([fenced], atomic=True)
            if held == -1:
                raise ThreadLostError(thread_id)
            if not held:
                raise LeaseLostError(thread_id)
        if registry and self.cluster:  # another slot: its own round trip
            yield Batch([registry])

    def _commit(self, batch: Batch, *registry: Any) -> Op:
        """Sends ``batch`` with a registry command, which on a Cluster (another slot) follows
        in its own round trip."""
        if not self.cluster:
            batch.add(*registry)
        yield batch
        if self.cluster:
            yield Batch([registry])

    def get_tuple(self, config: RunnableConfig) -> Op:
        """The checkpoint named in ``config``, else the latest of its thread and namespace.

        Raises:
            DamagedThreadError: The thread lost a key, or a field the checkpoint references.
        """
        layout = self.layout
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            found = yield from self._load(thread_id, [(ns, checkpoint_id)])
            return found[0] if found else None
        low, high = layout.lex_range(ns)
        # The key sizes ride along: a thread whose index was lost would otherwise look new.
        batch = Batch(snapshot=True)
        batch.add("ZREVRANGEBYLEX", layout.key(thread_id, "ids"), high, low, "LIMIT", 0, 1)
        self._sizes(batch, thread_id)
        members, *sizes = yield batch
        self._check_sizes(thread_id, sizes)
        if not members:
            return None
        checkpoint_id = layout.split(members[0])[1]
        found = yield from self._load(thread_id, [(ns, checkpoint_id)], sizes=False)
        return found[0] if found else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: Mapping[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Op:
        """Emits matching checkpoints newest first, a page at a time: of the thread
        ``config`` names, else of every registered thread. ``filter`` matches top-level
        metadata keys exactly."""
        if limit is not None and limit <= 0:
            return
        conf = (config or {}).get("configurable") or {}
        if conf.get("thread_id") is not None:
            threads = [str(conf["thread_id"])]
        else:
            threads = yield from self._live_threads()
        ns = conf.get("checkpoint_ns")  # None: every namespace
        before_id = get_checkpoint_id(before) if before else None
        left = limit
        for thread_id in threads:
            refs = yield from self._candidates(
                thread_id, ns, conf.get("checkpoint_id"), before_id, None if filter else left
            )
            for start in range(0, len(refs), PAGE):
                page = refs[start : start + PAGE]
                tuples = yield from self._load(thread_id, page, filter)
                if left is not None:
                    tuples = tuples[:left]
                    left -= len(tuples)
                if tuples:
                    yield Emit(tuples)
                if left == 0:
                    return

    def _candidates(
        self,
        thread_id: str,
        ns: str | None,
        checkpoint_id: str | None,
        before_id: str | None,
        limit: int | None,
    ) -> Op:
        """(namespace, id) of a thread's checkpoints, newest first, from its index only."""
        layout = self.layout
        ids_key = layout.key(thread_id, "ids")
        command: tuple[Any, ...] = ("ZRANGE", ids_key, 0, -1)
        if ns is not None and checkpoint_id:
            command = ("ZRANGEBYLEX", ids_key, *layout.lex_range(ns, checkpoint_id))
        elif ns is not None:
            low, high = layout.lex_range(ns)
            if before_id:
                high = "(" + layout.field(ns, before_id)
            paging = ("LIMIT", 0, limit) if limit is not None else ()
            command = ("ZREVRANGEBYLEX", ids_key, high, low, *paging)
        (members,) = yield Batch([command])
        refs = [
            (member_ns, cid)
            for member_ns, cid, _ in map(layout.split, members)
            if (not checkpoint_id or cid == checkpoint_id) and (not before_id or cid < before_id)
        ]
        refs.sort(key=lambda ref: ref[1], reverse=True)  # newest first across namespaces
        return refs if limit is None else refs[:limit]

    def _live_threads(self) -> Op:
        """Registered thread ids, dropping those expired (past the grace) on the way."""
        key = self.layout.threads_key
        expired = ("ZREMRANGEBYSCORE", key, "-inf", f"({time.time() - REGISTRY_GRACE_S}")
        _, members = yield Batch([expired, ("ZRANGE", key, 0, -1)])
        return sorted(m.decode() for m in members)

    def _sizes(self, batch: Batch, thread_id: str) -> None:
        """Adds the sizes of the thread's keys (`SIZED`, then ``blobs``) to ``batch``."""
        for name, command in [*SIZED.items(), ("blobs", "EXISTS")]:
            batch.add(command, self.layout.key(thread_id, name))

    def _check_sizes(self, thread_id: str, sizes: Sequence[int]) -> None:
        """Raises `DamagedThreadError` when a key the others imply is gone (evicted or
        deleted): ids, cp and meta hold one entry per checkpoint, writes and wix one per
        pending write, and no values outlive every checkpoint. Writes without a checkpoint
        are no damage (with ``durability="async"`` they may land first)."""
        size = dict(zip([*SIZED, "blobs"], sizes, strict=True))
        lost: list[str] = []
        for group, implied in ((("ids", "cp", "meta"), size["blobs"]), (("writes", "wix"), 0)):
            if implied or any(size[name] for name in group):
                lost += [name for name in group if not size[name]]
        if lost:
            key = self.layout.key
            raise DamagedThreadError(
                thread_id, [f"key {key(thread_id, name)} ({ROLES[name]})" for name in lost]
            )

    def _recheck(
        self, thread_id: str, ns: str, checkpoint_id: str, fields: tuple[Sequence[Any], ...]
    ) -> Op:
        """Reads a checkpoint's blob and write ``fields`` again, atomically, after a read
        missed some: None if the checkpoint went meanwhile (no damage), else the replies;
        `DamagedThreadError` if it is there and fields are still missing."""
        key = lambda name: self.layout.key(thread_id, name)  # noqa: E731
        names = ("blobs", "writes")
        batch = Batch([("HEXISTS", key("cp"), self.layout.field(ns, checkpoint_id))], snapshot=True)
        for name, wanted in zip(names, fields, strict=True):
            if wanted:
                batch.add("HMGET", key(name), *wanted)
        exists, *again = yield batch
        if not exists:
            return None
        found = [again.pop(0) if wanted else [] for wanted in fields]
        damage = [
            f"{gone} {ROLES[name]} of checkpoint {checkpoint_id} in {key(name)}"
            for name, replies in zip(names, found, strict=True)
            if (gone := replies.count(None))
        ]
        if damage:
            raise DamagedThreadError(thread_id, damage)
        return found[0], found[1]

    def _load(
        self,
        thread_id: str,
        refs: Sequence[tuple[str, str]],
        filter: Mapping[str, Any] | None = None,
        *,
        sizes: bool = True,
    ) -> Op:
        """Full tuples for (namespace, id) pairs in two round trips, the first a snapshot (with
        the key sizes unless the caller took them); missing ones are skipped.

        Raises:
            DamagedThreadError: A key of the thread, or a field a checkpoint references, is gone.
        """
        if not refs:
            return []
        layout = self.layout
        key = lambda name: layout.key(thread_id, name)  # noqa: E731
        batch = Batch(snapshot=True)
        if sizes:
            self._sizes(batch, thread_id)
        for ns, cid in refs:
            cp_field = layout.field(ns, cid)
            batch.add("HGET", key("cp"), cp_field)
            batch.add("HGET", key("meta"), cp_field)
            batch.add("ZRANGEBYLEX", key("ids"), *layout.lex_range(ns, cid), "LIMIT", 0, 1)
            batch.add("ZRANGEBYLEX", key("wix"), *layout.lex_range(ns, cid))
        replies = yield batch
        if sizes:
            self._check_sizes(thread_id, replies[: len(SIZED) + 1])
            replies = replies[len(SIZED) + 1 :]
        rows = []
        values = Batch()
        for i, (ns, cid) in enumerate(refs):
            raw_cp, raw_meta, member, write_fields = replies[4 * i : 4 * i + 4]
            if raw_cp is None or raw_meta is None:
                if raw_cp is None and not member:
                    continue  # no such checkpoint (or deleted since the caller listed it)
                name = "cp" if raw_cp is None else "meta"
                raise DamagedThreadError(
                    thread_id, [f"checkpoint {cid} of {key(name)} ({ROLES[name]})"]
                )
            metadata: CheckpointMetadata = layout.load(raw_meta)
            if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                continue
            checkpoint = layout.load(raw_cp)
            channels = list(checkpoint["channel_versions"].items())
            blob_fields = [layout.field(ns, ch, str(version)) for ch, version in channels]
            if blob_fields:
                values.add("HMGET", key("blobs"), *blob_fields)
            if write_fields:
                values.add("HMGET", key("writes"), *write_fields)
            parent = layout.split(member[0])[2] if member else ""
            rows.append((ns, cid, parent, checkpoint, metadata, blob_fields, write_fields))
        replies = iter((yield values) if values.commands else [])
        out = []
        for ns, cid, parent, checkpoint, metadata, blob_fields, write_fields in rows:
            blobs = next(replies) if blob_fields else []
            payloads = next(replies) if write_fields else []
            if None in blobs or None in payloads:
                found = yield from self._recheck(thread_id, ns, cid, (blob_fields, write_fields))
                if found is None:
                    continue  # deleted since the first round trip
                blobs, payloads = found
            channels = checkpoint["channel_versions"]
            checkpoint["channel_values"] = {
                ch: layout.load(raw) for ch, raw in zip(channels, blobs, strict=True) if raw
            }
            pending = [
                (task_id, channel, layout.load(raw))
                for task_id, channel, raw in self._writes(zip(write_fields, payloads, strict=True))
            ]
            out.append(
                CheckpointTuple(
                    config=_config(thread_id, ns, cid),
                    checkpoint=checkpoint,
                    metadata=metadata,
                    parent_config=_config(thread_id, ns, parent) if parent else None,
                    pending_writes=pending,
                )
            )
        return out

    def _writes(
        self, stored: Iterable[tuple[bytes, bytes | None]]
    ) -> builtins.list[tuple[str, str, bytes]]:
        """(task_id, channel, raw value) of one checkpoint's writes in `writes_sort_key` order."""
        rows = []
        for fld, payload in stored:
            if payload is None:
                continue
            _, _, task_id, idx = self.layout.split(fld)
            path, _, rest = payload.partition(b"\x00")
            channel, _, raw = rest.partition(b"\x00")
            rows.append((writes_sort_key(path.decode(), task_id, int(idx)), channel.decode(), raw))
        rows.sort(key=lambda row: row[0])
        return [(sort_key[1], channel, raw) for sort_key, channel, raw in rows]

    def get_delta_channel_history(self, *, config: RunnableConfig, channels: Sequence[str]) -> Op:
        """LangGraph's `get_delta_channel_history`, a page of ancestors per round trip."""
        if not channels:
            return {}
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        parents = yield from self._parents(thread_id, ns)
        target = get_checkpoint_id(config) or max(parents, default=None)
        start = parents.get(target) if target else None
        visits = yield from self._walk(thread_id, ns, parents, start, channels, with_writes=True)
        layout = self.layout
        collected: dict[str, list[PendingWrite]] = {ch: [] for ch in channels}
        seeds: dict[str, Any] = {}
        remaining = set(channels)
        for visit in visits:
            for task_id, channel, raw in reversed(self._writes(visit.writes)):
                if channel in remaining:
                    collected[channel].append((task_id, channel, layout.load(raw)))
            for channel, raw in visit.seeds.items():
                seeds[channel] = layout.load(raw)
                remaining.discard(channel)
        result: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            result[channel] = {"writes": collected[channel][::-1]}
            if channel in seeds:
                result[channel]["seed"] = seeds[channel]
        return result

    def _parents(self, thread_id: str, ns: str) -> Op:
        """checkpoint id -> parent id ("" at the root) for one namespace, from the index."""
        ids_key = self.layout.key(thread_id, "ids")
        (members,) = yield Batch([("ZRANGEBYLEX", ids_key, *self.layout.lex_range(ns))])
        return {cid: parent for _, cid, parent in map(self.layout.split, members)}

    def _walk(
        self,
        thread_id: str,
        ns: str,
        parents: Mapping[str, str],
        start: str | None,
        channels: Iterable[str],
        *,
        with_writes: bool,
    ) -> Op:
        """`_Visit` records of ``start`` and its ancestors, a page per two round trips, until
        each channel met a stored value (its seed). ``with_writes`` also reads (and checks,
        `DamagedThreadError`) the writes."""
        layout = self.layout
        key = lambda name: layout.key(thread_id, name)  # noqa: E731
        remaining = set(channels)
        visits: list[_Visit] = []
        current = start
        while current and remaining:
            page: list[str] = []
            while current and current in parents and len(page) < PAGE:
                page.append(current)
                current = parents[current]
            if not page:
                break
            batch = Batch()
            for cid in page:
                batch.add("HGET", key("cp"), layout.field(ns, cid))
                if with_writes:
                    batch.add("ZRANGEBYLEX", key("wix"), *layout.lex_range(ns, cid))
            replies = iter((yield batch))
            plan = []
            values = Batch()
            for cid in page:
                raw_cp = next(replies)
                write_fields = next(replies) if with_writes else []
                if raw_cp is None:  # a pruned ancestor: the chain ends here
                    current = None
                    break
                versions = layout.load(raw_cp)["channel_versions"]
                wanted = [ch for ch in remaining if ch in versions]
                fields = [layout.field(ns, ch, str(versions[ch])) for ch in wanted]
                if fields:
                    values.add("HMGET", key("blobs"), *fields)
                if write_fields:
                    values.add("HMGET", key("writes"), *write_fields)
                plan.append((cid, wanted, fields, write_fields))
            replies = iter((yield values) if values.commands else [])
            for cid, wanted, fields, write_fields in plan:
                blobs = next(replies) if fields else []
                payloads = next(replies) if write_fields else []
                if with_writes and (None in blobs or None in payloads):
                    found = yield from self._recheck(thread_id, ns, cid, (fields, write_fields))
                    if found is None:  # deleted since the first round trip: the chain ends
                        current = None
                        break
                    blobs, payloads = found
                seeds = {
                    ch: raw
                    for ch, raw in zip(wanted, blobs, strict=True)
                    if raw and ch in remaining
                }
                visits.append(_Visit(cid, seeds, list(zip(write_fields, payloads, strict=True))))
                remaining -= seeds.keys()
                if not remaining:
                    break
        return visits

    def delete_thread(self, thread_id: str) -> Op:
        """Removes every checkpoint, value and write of a thread in one transaction."""
        batch = Batch([("DEL", *self.layout.keys(str(thread_id)))], atomic=True)
        yield from self._commit(batch, "ZREM", self.layout.threads_key, str(thread_id))

    def copy_thread(self, source: str, target: str) -> Op:
        """Merges the hashes and sorted sets of ``source`` (whose fields name no thread) into
        ``target``'s, in one transaction."""
        layout = self.layout
        source, target = str(source), str(target)
        replies = yield Batch(
            [("HGETALL", layout.key(source, name)) for name in HASHES]
            + [("ZRANGE", layout.key(source, name), 0, -1) for name in SORTED_SETS]
        )
        hashes = dict(zip(HASHES, replies[: len(HASHES)], strict=True))
        members = dict(zip(SORTED_SETS, replies[len(HASHES) :], strict=True))
        if not members["ids"]:
            return
        out = Batch(atomic=True)
        for name, content in hashes.items():
            if content:
                out.add(
                    "HSET", layout.key(target, name), *[x for kv in content.items() for x in kv]
                )
        for name, content in members.items():
            if content:
                out.add("ZADD", layout.key(target, name), *[x for m in content for x in (0, m)])
        yield from self._write(target, None, out)

    def delete_for_runs(self, run_ids: Sequence[str]) -> Op:
        """Removes the checkpoints, and their writes, whose metadata names one of ``run_ids``
        (reading the metadata of every registered thread, a page per round trip)."""
        wanted = set(run_ids)
        if not wanted:
            return
        layout = self.layout
        threads = yield from self._live_threads()
        for start in range(0, len(threads), PAGE):
            page = threads[start : start + PAGE]
            metas = yield Batch([("HGETALL", layout.key(thread_id, "meta")) for thread_id in page])
            for thread_id, meta in zip(page, metas, strict=True):
                doomed = [
                    tuple(layout.split(fld))
                    for fld, raw in meta.items()
                    if layout.load(raw).get("run_id") in wanted
                ]
                if doomed:
                    yield from self._drop(thread_id, doomed)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> Op:
        """Drops old checkpoints of the given threads (see `FullInMemorySaver.prune`)."""
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(
                f"unknown prune strategy {strategy!r}: use one of {', '.join(PRUNE_STRATEGIES)}"
            )
        layout = self.layout
        for thread_id in map(str, thread_ids):
            if strategy != "keep_latest":
                yield from self.delete_thread(thread_id)
                continue
            (members,) = yield Batch([("ZRANGE", layout.key(thread_id, "ids"), 0, -1)])
            by_ns: dict[str, dict[str, str]] = {}
            for ns, cid, parent in map(layout.split, members):
                by_ns.setdefault(ns, {})[cid] = parent
            latest = {ns: max(chain) for ns, chain in by_ns.items()}
            fields = [layout.field(ns, cid) for ns, cid in latest.items()]
            reads = [("HMGET", layout.key(thread_id, name), *fields) for name in ("cp", "meta")]
            raw_cps, raw_metas = (yield Batch(reads)) if fields else ([], [])
            keep = set(latest.items())
            for (ns, cid), raw_cp, raw_meta in zip(latest.items(), raw_cps, raw_metas, strict=True):
                if raw_cp is None or raw_meta is None:
                    continue
                # The metadata names the delta channels that have not snapshotted since.
                counters = layout.load(raw_meta).get("counters_since_delta_snapshot") or {}
                versions = layout.load(raw_cp)["channel_versions"]
                delta = [ch for ch in counters if ch in versions]
                if delta:
                    visits = yield from self._walk(
                        thread_id, ns, by_ns[ns], cid, delta, with_writes=False
                    )
                    keep |= {(ns, visit.checkpoint_id) for visit in visits}
            doomed = [
                (ns, cid) for ns, chain in by_ns.items() for cid in chain if (ns, cid) not in keep
            ]
            if doomed:
                yield from self._drop(thread_id, doomed)

    def _drop(self, thread_id: str, doomed: Sequence[tuple[str, ...]]) -> Op:
        """Removes checkpoints with their writes, and the values no kept checkpoint uses."""
        layout = self.layout
        key = lambda name: layout.key(thread_id, name)  # noqa: E731
        batch = Batch([("HGETALL", key("cp")), ("HKEYS", key("blobs"))])
        for ns, cid in doomed:
            batch.add("ZRANGEBYLEX", key("wix"), *layout.lex_range(ns, cid))
        checkpoints, blob_fields, *write_fields = yield batch
        doomed_fields = {layout.field(ns, cid) for ns, cid in doomed}
        used = set()
        for fld, raw in checkpoints.items():
            if fld.decode() not in doomed_fields:
                ns = layout.split(fld)[0]
                versions = layout.load(raw)["channel_versions"]
                used |= {layout.field(ns, ch, str(version)) for ch, version in versions.items()}
        unused = [f for f in blob_fields if f.decode() not in used]
        out = Batch(atomic=True)
        out.add("HDEL", key("cp"), *doomed_fields)
        out.add("HDEL", key("meta"), *doomed_fields)
        for ns, cid in doomed:
            out.add("ZREMRANGEBYLEX", key("ids"), *layout.lex_range(ns, cid))
            out.add("ZREMRANGEBYLEX", key("wix"), *layout.lex_range(ns, cid))
        writes = [f for fields in write_fields for f in fields]
        if writes:
            out.add("HDEL", key("writes"), *writes)
        if unused:
            out.add("HDEL", key("blobs"), *unused)
        if all(fld.decode() in doomed_fields for fld in checkpoints):  # nothing left
            yield from self._commit(out, "ZREM", layout.threads_key, thread_id)
        else:
            yield out


SCRIPTING = {"EVAL": ("return 1", 0), "EVALSHA": (RETURN_1_SHA, 0), "SCRIPT LOAD": ("return 1",)}
"""The scripting commands leases need (the fenced write, redis-py's `Lock`), tried at setup."""


def setup(ttl: float | None, *, allow_eviction: bool, address: str, user: str | None = None) -> Op:
    """Checks that Redis answers, lets ``user`` run scripts (unless ``user`` is None: leases
    off) and will not evict the saver's keys; returns its ``maxmemory-policy`` (None when
    neither ``CONFIG GET`` nor ``INFO memory`` tells: a warning, and damage is still caught
    on load).

    ``noeviction`` never evicts; ``volatile-*`` evicts only keys with a TTL (the saver's
    have one when ``ttl`` is set); any other policy may evict any key.

    Raises:
        RedisPermissionError: The ACL refuses ``user`` a scripting command.
        RedisEvictionPolicyError: The policy may evict the saver's keys and
            ``allow_eviction`` is False.
    """
    yield Batch([("PING",)])  # a refused password or a dead server fails here, as itself
    batch = Batch(tolerant=True)
    batch.add("CONFIG GET", "maxmemory-policy")  # as one word the async Cluster routes it
    batch.add("INFO", "memory")
    if user is not None:
        for name, args in SCRIPTING.items():
            batch.add(name, *args)
    config, info, *scripting = yield batch
    refused = [
        name
        for name, reply in zip(SCRIPTING, scripting, strict=False)
        if isinstance(reply, redis.exceptions.NoPermissionError)
    ]
    if refused:
        raise RedisPermissionError(
            f"Redis at {address}: user {user} may not run {', '.join(refused)}, which the "
            f"thread lease needs: grant {'them' if len(refused) > 1 else 'it'} (ACL SETUSER {user} "
            "+@scripting)"
        )
    policy = _maxmemory_policy(config, info)
    if policy is None:
        log.warning(
            "Redis at %s answers neither CONFIG GET nor INFO memory: cannot check that its "
            "maxmemory-policy keeps checkpoints (noeviction, or volatile-* without ttl)",
            address,
        )
        return None
    volatile = policy.startswith("volatile-")
    if policy == "noeviction" or (volatile and ttl is None) or allow_eviction:
        return policy
    risk = (
        f"maxmemory-policy is {policy}, which evicts keys with a TTL, and ttl={ttl:g} "
        "gives every key of the saver one"
        if volatile
        else f"maxmemory-policy is {policy}, which may evict any key"
    )
    or_ttl = ", or use the saver without ttl" if volatile else ""
    raise RedisEvictionPolicyError(
        f"Redis at {address}: {risk}; evicted keys damage checkpointed threads: run "
        f"`CONFIG SET maxmemory-policy noeviction` (and set it in redis.conf){or_ttl}, "
        "or pass allow_eviction=True (--allow-eviction in the CLI) to accept the risk"
    )


def _maxmemory_policy(config: Any, info: Any) -> str | None:
    """The policy from a CONFIG GET reply, else an INFO memory reply (errors are skipped)."""
    if isinstance(config, Mapping):
        for name, value in config.items():
            if _text(name) == "maxmemory-policy":
                return _text(value)
    if isinstance(info, Mapping) and "maxmemory_policy" in info:
        return _text(info["maxmemory_policy"])
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    ids = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
    return {"configurable": ids}
