"""`FullInMemorySaver`: LangGraph's in-memory saver with the operations it lacks.

LangGraph's `InMemorySaver` (and the one ``langgraph dev`` persists to ``.langgraph_api/``)
stores and deletes threads, but has no ``delete_for_runs``, ``copy_thread`` or ``prune``.
langgraph-api, handed such a saver as a custom checkpointer, warns at start-up and fails
a rollback's clean-up. This wrapper adds the three over the saver's own storage, so the
server keeps its persistence and gets the full checkpointer API.

The storage is the layout `InMemorySaver` declares on its public attributes (the
langgraph-api in-memory runtime edits it the same way):

    storage[thread_id][ns][checkpoint_id] = (checkpoint, metadata, parent_id), serialized
    writes[(thread_id, ns, checkpoint_id)][(task_id, idx)] = (task_id, channel, value, path)
    blobs[(thread_id, ns, channel, version)] = value, serialized ("empty": no value)
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph.checkpoints.ops import PRUNE_STRATEGIES

Ref = tuple[str, str]
"""(namespace, checkpoint id) of one checkpoint of a thread."""


class FullInMemorySaver(BaseCheckpointSaver[str]):
    """An `InMemorySaver` (wrapped, not copied) plus delete_for_runs, copy_thread, prune.

    Every other call goes to the wrapped saver unchanged, so a subclass's behaviour (the
    dev server's metadata enrichment, decryption, persistence) is kept.

    Args:
        saver: The saver to extend; its storage is shared, not copied.
    """

    def __init__(self, saver: InMemorySaver) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver

    # -- the wrapped saver's own operations ---------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The wrapped saver's `get_tuple`."""
        return self.saver.get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """The wrapped saver's `list`."""
        return self.saver.list(config, filter=filter, before=before, limit=limit)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """The wrapped saver's `put`."""
        return self.saver.put(config, checkpoint, metadata, new_versions)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """The wrapped saver's `put_writes`."""
        self.saver.put_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        """The wrapped saver's `delete_thread`."""
        self.saver.delete_thread(thread_id)

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """The wrapped saver's one-walk DeltaChannel history."""
        return self.saver.get_delta_channel_history(config=config, channels=channels)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The wrapped saver's version scheme."""
        return self.saver.get_next_version(current, channel)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The wrapped saver's `aget_tuple`."""
        return await self.saver.aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """The wrapped saver's `alist`."""
        async for item in self.saver.alist(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """The wrapped saver's `aput`."""
        return await self.saver.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """The wrapped saver's `aput_writes`."""
        await self.saver.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """The wrapped saver's `adelete_thread`."""
        await self.saver.adelete_thread(thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """The wrapped saver's one-walk DeltaChannel history."""
        return await self.saver.aget_delta_channel_history(config=config, channels=channels)

    def clear(self) -> None:
        """The wrapped saver's ``clear``, if it has one (``langgraph dev``'s truncate route
        calls it between tests)."""
        clear = getattr(self.saver, "clear", None)
        if clear is not None:
            clear()

    # -- what InMemorySaver lacks --------------------------------------------------------

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints whose metadata names one of ``run_ids``, with their
        writes and the values no remaining checkpoint uses."""
        wanted = {str(run_id) for run_id in run_ids}
        if not wanted:
            return
        for thread_id, namespaces in builtins.list(self.saver.storage.items()):
            doomed = [
                (ns, cid)
                for ns, checkpoints in namespaces.items()
                for cid, (_, metadata, _) in checkpoints.items()
                if self.serde.loads_typed(metadata).get("run_id") in wanted
            ]
            self._drop(thread_id, doomed)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies every checkpoint, write and value of one thread into another (merged
        into what the target already holds). The stored entries name no thread, so they
        are shared as they are."""
        source, target = str(source_thread_id), str(target_thread_id)
        namespaces = self.saver.storage.get(source)
        if not namespaces:
            return
        for ns, checkpoints in namespaces.items():
            self.saver.storage[target][ns].update(checkpoints)
        for (thread_id, ns, cid), writes in builtins.list(self.saver.writes.items()):
            if thread_id == source:
                self.saver.writes[(target, ns, cid)].update(writes)
        for (thread_id, ns, channel, version), blob in builtins.list(self.saver.blobs.items()):
            if thread_id == source:
                self.saver.blobs[(target, ns, channel, version)] = blob

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Drops old checkpoints of the given threads, as the Redis saver does.

        Args:
            thread_ids: Threads to prune; unknown ones are skipped.
            strategy: ``"keep_latest"`` keeps each namespace's latest checkpoint with its
                writes and, DeltaChannel-aware, the ancestors its delta channels replay
                (back to the nearest one storing each channel's value); ``"delete"`` (or
                langgraph-api's ``"delete_all"``) removes the threads.

        Raises:
            ValueError: An unknown strategy (nothing is pruned).
        """
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(
                f"unknown prune strategy {strategy!r}: use one of {', '.join(PRUNE_STRATEGIES)}"
            )
        for thread_id in map(str, thread_ids):
            if strategy != "keep_latest":
                self.saver.delete_thread(thread_id)
                continue
            namespaces = self.saver.storage.get(thread_id, {})
            keep: set[Ref] = set()
            for ns, checkpoints in namespaces.items():
                if checkpoints:
                    keep |= {(ns, cid) for cid in self._replayed(thread_id, ns, checkpoints)}
            every = [(ns, cid) for ns, checkpoints in namespaces.items() for cid in checkpoints]
            self._drop(thread_id, [ref for ref in every if ref not in keep])

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """`delete_for_runs` (memory only: nothing to await)."""
        self.delete_for_runs(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """`copy_thread` (memory only: nothing to await)."""
        self.copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`prune` (memory only: nothing to await)."""
        self.prune(thread_ids, strategy=strategy)

    # -- helpers -------------------------------------------------------------------------

    def _replayed(
        self, thread_id: str, ns: str, checkpoints: Mapping[str, tuple[Any, Any, str | None]]
    ) -> builtins.list[str]:
        """The namespace's latest checkpoint and the ancestors its delta channels replay.

        The latest metadata names the delta channels that have not snapshotted since; each
        one's walk ends at the nearest checkpoint storing a value for it.
        """
        latest = max(checkpoints)  # uuid6 ids: lexical order is time order
        raw_checkpoint, raw_metadata, _ = checkpoints[latest]
        counters = self.serde.loads_typed(raw_metadata).get("counters_since_delta_snapshot")
        versions = self.serde.loads_typed(raw_checkpoint)["channel_versions"]
        remaining = {channel for channel in counters or {} if channel in versions}
        kept = [latest]
        current: str | None = latest
        while current is not None and current in checkpoints and remaining:
            if current != latest:
                kept.append(current)
            raw_checkpoint, _, parent = checkpoints[current]
            versions = self.serde.loads_typed(raw_checkpoint)["channel_versions"]
            remaining -= {
                channel
                for channel in remaining
                if channel in versions
                and self.saver.blobs.get((thread_id, ns, channel, versions[channel]), ("empty",))[0]
                != "empty"
            }
            current = parent
        return kept

    def _drop(self, thread_id: str, doomed: Iterable[Ref]) -> None:
        """Removes checkpoints with their writes, then the values no kept checkpoint uses."""
        doomed = builtins.list(doomed)
        if not doomed:
            return
        namespaces = self.saver.storage[thread_id]
        for ns, cid in doomed:
            namespaces[ns].pop(cid, None)
            self.saver.writes.pop((thread_id, ns, cid), None)
            if not namespaces[ns]:
                del namespaces[ns]
        used = {
            (ns, channel, version)
            for ns, checkpoints in namespaces.items()
            for raw_checkpoint, _, _ in checkpoints.values()
            for channel, version in self.serde.loads_typed(raw_checkpoint)[
                "channel_versions"
            ].items()
        }
        for key in builtins.list(self.saver.blobs):
            if key[0] == thread_id and key[1:] not in used:
                del self.saver.blobs[key]
        if not namespaces:
            del self.saver.storage[thread_id]


__all__ = ["FullInMemorySaver"]
