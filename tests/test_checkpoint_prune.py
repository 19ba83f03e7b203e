"""``aprune``/``prune`` as LangGraph defines them and langgraph-api calls them.

LangGraph's `BaseCheckpointSaver.prune`: ``"keep_latest"`` keeps each namespace's most
recent checkpoint (DeltaChannel-aware: never the ancestors a delta channel replays),
``"delete"`` removes the threads; langgraph-api names that one ``"delete_all"``. Each spec
runs on the Redis saver (a real redis-server) and on `FullInMemorySaver`, the in-memory
saver ``langgraph dev`` gets without ``REDIS_URL``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph.checkpoints import AsyncRedisSaver, FullInMemorySaver, RedisSaver
from tests.test_checkpoint_sync import DeltaState, two_step_graph


def cfg(thread: str, ns: str = "", checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


async def put(
    saver: BaseCheckpointSaver,
    thread: str,
    values: dict[str, Any],
    parent: dict[str, Any] | None = None,
    ns: str = "",
) -> dict[str, Any]:
    """Puts a checkpoint after ``parent``; only the channels in ``values`` change."""
    previous = (await saver.aget_tuple(parent)).checkpoint if parent else empty_checkpoint()
    versions = dict(previous["channel_versions"])
    for channel in values:
        versions[channel] = saver.get_next_version(versions.get(channel), None)
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {**previous["channel_values"], **values}
    checkpoint["channel_versions"] = versions
    new = {channel: versions[channel] for channel in values}
    return await saver.aput(parent or cfg(thread, ns), checkpoint, {"step": len(versions)}, new)


async def ids(saver: BaseCheckpointSaver, thread: str, ns: str = "") -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] async for t in saver.alist(cfg(thread, ns))]


def cid(config: dict[str, Any]) -> str:
    return config["configurable"]["checkpoint_id"]


async def stored_values(saver: BaseCheckpointSaver, thread: str) -> int:
    """How many channel values the saver holds for ``thread`` (its own storage)."""
    if isinstance(saver, FullInMemorySaver):
        return sum(1 for key in saver.blobs if key[0] == thread)
    assert isinstance(saver, AsyncRedisSaver)
    return await saver.client.hlen(f"{saver.key_prefix}:{{{thread}}}:blobs")


@pytest.fixture(params=["redis", "memory"])
async def saver(request: pytest.FixtureRequest) -> AsyncIterator[BaseCheckpointSaver]:
    if request.param == "memory":
        yield FullInMemorySaver(InMemorySaver())
        return
    url = request.getfixturevalue("redis_url")
    async with AsyncRedisSaver.from_conn_string(url) as redis_saver:
        yield redis_saver


async def test_keep_latest_keeps_each_namespaces_latest_with_its_writes_and_values(saver):
    c1 = await put(saver, "t", {"x": 1, "big": "kept since step 1"})
    c2 = await put(saver, "t", {"x": 2}, parent=c1)
    await saver.aput_writes(c2, [("x", 20)], task_id="old")
    c3 = await put(saver, "t", {"x": 3}, parent=c2)
    await saver.aput_writes(c3, [("x", 30)], task_id="new")
    k1 = await put(saver, "t", {"y": 1}, ns="child:1")
    k2 = await put(saver, "t", {"y": 2}, parent=k1)
    o1 = await put(saver, "other", {"x": 1})
    o2 = await put(saver, "other", {"x": 2}, parent=o1)

    await saver.aprune(["t"], strategy="keep_latest")

    assert await ids(saver, "t") == [cid(c3)]
    assert await ids(saver, "t", "child:1") == [cid(k2)]
    latest = await saver.aget_tuple(cfg("t"))
    assert latest.checkpoint["channel_values"] == {"x": 3, "big": "kept since step 1"}
    assert latest.pending_writes == [("new", "x", 30)]
    assert await saver.aget_tuple(c2) is None
    # x@3, big@1 and the child's y@2: the values only dropped checkpoints used are gone.
    assert await stored_values(saver, "t") == 3
    assert await ids(saver, "other") == [cid(o2), cid(o1)]  # not named: untouched


@pytest.mark.parametrize("strategy", ["delete", "delete_all"])
async def test_delete_removes_the_named_threads_whole(saver, strategy):
    # "delete" is LangGraph's name; langgraph-api sends "delete_all" (its gRPC service).
    await put(saver, "t", {"x": 2}, parent=await put(saver, "t", {"x": 1}))
    await put(saver, "t", {"y": 1}, ns="child:1")
    await put(saver, "other", {"x": 1})
    await saver.aprune(["t", "never-written"], strategy=strategy)
    assert [t async for t in saver.alist(cfg("t"))] == []
    assert await saver.aget_tuple(cfg("t", "child:1")) is None
    assert await stored_values(saver, "t") == 0
    assert len(await ids(saver, "other")) == 1


async def test_an_unknown_strategy_raises_and_prunes_nothing(saver):
    c1 = await put(saver, "t", {"x": 1})
    c2 = await put(saver, "t", {"x": 2}, parent=c1)
    with pytest.raises(ValueError, match="unknown prune strategy 'keep_some'"):
        await saver.aprune(["t"], strategy="keep_some")
    assert await ids(saver, "t") == [cid(c2), cid(c1)]


async def test_keep_latest_keeps_the_ancestors_a_delta_channel_replays(saver):
    graph = two_step_graph(DeltaState).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "d"}}
    for _ in range(4):
        await graph.ainvoke({"log": ["in"]}, config)
    expected = ["in", "a", "b"] * 4
    before = len(await ids(saver, "d"))
    await saver.aprune(["d"])
    kept = len(await ids(saver, "d"))
    assert 1 < kept < before  # back to the last snapshot of `log`; older ones go
    assert (await graph.aget_state(config)).values["log"] == expected
    await graph.ainvoke({"log": ["in"]}, config)
    assert (await graph.aget_state(config)).values["log"] == [*expected, "in", "a", "b"]


def test_sync_redis_saver_takes_langgraph_apis_strategy_name(redis_url):
    with RedisSaver.from_conn_string(redis_url) as sync_saver:
        config = cfg("t")
        checkpoint = empty_checkpoint()
        sync_saver.put(config, checkpoint, {"step": 0}, {})
        sync_saver.prune(["t"], strategy="delete_all")
        assert sync_saver.get_tuple(config) is None


async def test_full_in_memory_saver_passes_every_conformance_capability():
    @checkpointer_test(name="FullInMemorySaver")
    async def factory() -> AsyncIterator[FullInMemorySaver]:
        yield FullInMemorySaver(InMemorySaver())

    report = await validate(factory)
    for capability in ALL_CAPABILITIES:
        result = report.results[capability.value]
        assert result.passed is True and result.tests_failed == 0, (
            capability.value,
            result.failures,
        )
    assert report.conformance_level() == "FULL"


async def test_full_in_memory_saver_keeps_the_wrapped_savers_own_behaviour():
    # The dev server's saver enriches metadata in `put`; the wrapper must not bypass it.
    class Enriching(InMemorySaver):
        def put(self, config, checkpoint, metadata, new_versions):  # type: ignore[override]
            return super().put(config, checkpoint, {**metadata, "by": "server"}, new_versions)

    inner = Enriching()
    saver = FullInMemorySaver(inner)
    graph = two_step_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "g"}}
    assert (await graph.ainvoke({"log": []}, config))["log"] == ["a", "b"]
    assert {t.metadata["by"] async for t in saver.alist(config)} == {"server"}
    assert "g" in inner.storage  # one storage: the wrapped saver's
    await saver.acopy_thread("g", "copy")
    await saver.aprune(["copy"])
    assert len([t async for t in inner.alist(cfg("copy"))]) == 1
