"""`FullInMemorySaver`: the ``delete_for_runs``, ``copy_thread`` and ``prune`` langgraph-api
wants of a checkpointer, added to an `InMemorySaver` (or the one ``langgraph dev`` persists).
It reads checkpoints with the saver's ``list`` and ``get_tuple``, and edits the storage
`InMemorySaver` keeps on its public attributes:

    storage[thread_id][ns][checkpoint_id] = (checkpoint, metadata, parent_id), serialized
    writes[(thread_id, ns, checkpoint_id)][(task_id, idx)] = (task_id, channel, value, path)
    blobs[(thread_id, ns, channel, version)] = value, serialized
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any, cast

from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph.checkpoints.ops import PRUNE_STRATEGIES


class FullInMemorySaver(InMemorySaver):
    """``saver`` plus delete_for_runs, copy_thread and prune: an instance of the saver's own
    class with these added, sharing its state, so a subclass's behaviour is kept."""

    def __new__(cls, saver: InMemorySaver) -> FullInMemorySaver:
        kind = type(saver)
        if issubclass(cls, kind) or issubclass(kind, cls):
            full = cls if issubclass(cls, kind) else kind
        else:
            full = type(f"Full{kind.__name__}", (cls, kind), {})
        extended = cast(FullInMemorySaver, object.__new__(full))
        extended.__dict__ = saver.__dict__
        return extended

    def __init__(self, saver: InMemorySaver) -> None:
        """The state is the saver's, shared by ``__new__``."""

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes the checkpoints whose metadata names one of ``run_ids``, with their
        writes and the values no remaining checkpoint uses."""
        wanted = {str(run_id) for run_id in run_ids}
        doomed: dict[str, builtins.list[tuple[str, str]]] = {}
        for item in self.list(None) if wanted else ():
            if str(item.metadata.get("run_id")) in wanted:
                conf = item.config["configurable"]
                ref = (conf["checkpoint_ns"], conf["checkpoint_id"])
                doomed.setdefault(conf["thread_id"], []).append(ref)
        for thread_id, refs in doomed.items():
            self._drop(thread_id, refs)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Merges every checkpoint, write and value of one thread into another (the entries
        name no thread, so they are shared as they are)."""
        source, target = str(source_thread_id), str(target_thread_id)
        for ns, checkpoints in self.storage.get(source, {}).items():
            self.storage[target][ns].update(checkpoints)
        for (thread_id, ns, cid), writes in builtins.list(self.writes.items()):
            if thread_id == source:
                self.writes[(target, ns, cid)].update(writes)
        for (thread_id, *rest), blob in builtins.list(self.blobs.items()):
            if thread_id == source:
                self.blobs[(target, *rest)] = blob  # type: ignore[index]

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Drops old checkpoints of ``thread_ids`` (unknown ones are skipped): ``"keep_latest"``
        keeps each namespace's latest checkpoint with its writes and the ancestors its delta
        channels replay; ``"delete"`` (or langgraph-api's ``"delete_all"``) removes the threads.

        Raises:
            ValueError: An unknown strategy (nothing is pruned).
        """
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(
                f"unknown prune strategy {strategy!r}: use one of {', '.join(PRUNE_STRATEGIES)}"
            )
        for thread_id in map(str, thread_ids):
            if strategy != "keep_latest":
                self.delete_thread(thread_id)
                continue
            namespaces = self.storage.get(thread_id, {})
            keep = {(ns, cid) for ns in [*namespaces] for cid in self._replayed(thread_id, ns)}
            every = [(ns, cid) for ns, chain in namespaces.items() for cid in chain]
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

    def _replayed(self, thread_id: str, ns: str) -> builtins.list[str]:
        """The namespace's latest checkpoint and the ancestors its delta channels (named in
        its metadata) replay, back to the nearest one storing each channel's value."""
        item = self.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}})
        if item is None:
            return []
        versions = item.checkpoint["channel_versions"]
        counters: Any = item.metadata.get("counters_since_delta_snapshot") or {}
        remaining = {channel for channel in counters if channel in versions}
        kept = []
        while item is not None:
            kept.append(item.config["configurable"]["checkpoint_id"])
            remaining -= item.checkpoint["channel_values"].keys()
            if not remaining or item.parent_config is None:
                break
            item = self.get_tuple(item.parent_config)
        return kept

    def _drop(self, thread_id: str, doomed: Sequence[tuple[str, str]]) -> None:
        """Removes checkpoints with their writes, then the values no kept checkpoint uses."""
        namespaces = self.storage.get(thread_id)
        if not namespaces or not doomed:
            return
        for ns, cid in doomed:
            namespaces[ns].pop(cid, None)
            self.writes.pop((thread_id, ns, cid), None)
            if not namespaces[ns]:
                del namespaces[ns]
        used = set()
        for ns, checkpoints in namespaces.items():
            for raw_checkpoint, _, _ in checkpoints.values():
                versions = self.serde.loads_typed(raw_checkpoint)["channel_versions"]
                used |= {(ns, channel, version) for channel, version in versions.items()}
        for key in builtins.list(self.blobs):
            if key[0] == thread_id and key[1:] not in used:
                del self.blobs[key]
        if not namespaces:
            del self.storage[thread_id]
