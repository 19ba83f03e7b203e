"""RedisSaver (sync) on a real redis-server, and both savers under real LangGraph graphs."""

import asyncio
import builtins
import operator
import time
from typing import Annotated

import pytest
import redis
import redis.asyncio as aredis
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from redis.cluster import RedisCluster, key_slot
from typing_extensions import TypedDict

from pacore_graph.checkpoints import AsyncRedisSaver, RedisSaver, RedisUnavailableError
from tests.servers import free_port


def cfg(thread, ns="", checkpoint_id=None):
    c = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    if checkpoint_id:
        c["configurable"]["checkpoint_id"] = checkpoint_id
    return c


def put(saver, thread, parent=None, step=0, values=None, new=None, ns="", **meta):
    """Puts a checkpoint after ``parent``; ``new`` names the channels that changed (default all)."""
    values = {"x": step} if values is None else values
    previous = saver.get_tuple(parent).checkpoint["channel_versions"] if parent else {}
    changed = list(values) if new is None else new
    versions = {**previous, **{k: saver.get_next_version(previous.get(k), None) for k in changed}}
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    config = parent or cfg(thread, ns)
    return saver.put(config, cp, {"step": step, **meta}, {k: versions[k] for k in changed})


def ids(tuples):
    return [t.config["configurable"]["checkpoint_id"] for t in tuples]


@pytest.fixture
def saver(redis_url):
    with RedisSaver.from_conn_string(redis_url) as s:
        s.setup()
        yield s


def test_round_trip_and_list_filter_before_limit(saver):
    c1 = put(saver, "t", step=1, source="input")
    c2 = put(saver, "t", parent=c1, step=2, source="loop")
    c3 = put(saver, "t", parent=c2, step=3, source="loop", run_id="r1")
    child = put(saver, "t", ns="child:1", step=9)
    put(saver, "other", step=7)
    latest = saver.get_tuple(cfg("t"))
    assert latest.config == c3 and latest.parent_config == c2
    assert latest.checkpoint["channel_values"] == {"x": 3}
    assert latest.metadata == {"step": 3, "source": "loop", "run_id": "r1"}
    assert saver.get_tuple(c1).checkpoint["channel_values"] == {"x": 1}
    assert saver.get_tuple(c1).parent_config is None
    assert saver.get_tuple(cfg("t", "child:1")).config == child
    assert saver.get_tuple(cfg("t", checkpoint_id="nope")) is None
    assert saver.get_tuple(cfg("missing")) is None

    assert ids(saver.list(cfg("t"))) == ids([saver.get_tuple(c) for c in (c3, c2, c1)])
    assert [t.metadata["step"] for t in saver.list(cfg("t"), filter={"source": "loop"})] == [3, 2]
    assert [t.metadata["step"] for t in saver.list(cfg("t"), filter={"step": 2})] == [2]
    assert list(saver.list(cfg("t"), filter={"source": "update"})) == []
    assert [t.metadata["step"] for t in saver.list(cfg("t"), before=c3)] == [2, 1]
    assert [t.metadata["step"] for t in saver.list(cfg("t"), limit=1)] == [3]
    assert [t.metadata["step"] for t in saver.list(cfg("t"), before=c3, limit=1)] == [2]
    assert [
        t.metadata["step"] for t in saver.list(cfg("t"), filter={"source": "loop"}, limit=1)
    ] == [3]
    assert ids(saver.list(c2)) == [c2["configurable"]["checkpoint_id"]]
    # no namespace: every namespace of the thread; no config: every thread
    every_ns = {"configurable": {"thread_id": "t"}}
    assert sorted(t.metadata["step"] for t in saver.list(every_ns)) == [1, 2, 3, 9]
    assert sorted(t.metadata["step"] for t in saver.list(None)) == [1, 2, 3, 7, 9]
    assert [t.metadata["step"] for t in saver.list(None, filter={"run_id": "r1"})] == [3]


def test_unchanged_channels_are_stored_once(saver):
    c1 = put(saver, "t", values={"big": "x" * 1000, "small": 1})
    c2 = put(saver, "t", parent=c1, values={"big": "x" * 1000, "small": 2}, new=["small"])
    assert saver.client.hlen("pacore:{t}:blobs") == 3  # big once, small twice
    got = saver.get_tuple(c2).checkpoint
    assert got["channel_values"] == {"big": "x" * 1000, "small": 2}
    assert (
        got["channel_versions"]["big"] == saver.get_tuple(c1).checkpoint["channel_versions"]["big"]
    )


def test_pending_writes_keep_first_unless_special(saver):
    c1 = put(saver, "t")
    saver.put_writes(c1, [("a", 1), ("b", 2)], task_id="task-2", task_path="~b")
    saver.put_writes(c1, [("a", 99)], task_id="task-2", task_path="~b")  # same (task, idx): kept
    saver.put_writes(c1, [("c", 3)], task_id="task-1", task_path="~a")
    saver.put_writes(c1, [("__error__", "boom")], task_id="task-3")
    saver.put_writes(c1, [("__error__", "boom again")], task_id="task-3")  # special: replaced
    writes = saver.get_tuple(c1).pending_writes
    # writes_sort_key order: (task_path, task_id, idx)
    assert writes == [
        ("task-3", "__error__", "boom again"),
        ("task-1", "c", 3),
        ("task-2", "a", 1),
        ("task-2", "b", 2),
    ]
    assert saver.get_tuple(put(saver, "t", parent=c1)).pending_writes == []


def test_delete_copy_prune_and_delete_for_runs(saver):
    client = saver.client
    put(saver, "dst", step=0)  # the copy merges into what the target already has
    c1 = put(saver, "src", step=1, run_id="r1")
    c2 = put(saver, "src", parent=c1, step=2, run_id="r2")
    saver.put_writes(c2, [("x", 5)], task_id="w")
    saver.copy_thread("src", "dst")
    copied = saver.get_tuple(cfg("dst"))
    assert copied.config["configurable"]["thread_id"] == "dst"
    assert copied.checkpoint["channel_values"] == {"x": 2}
    assert copied.pending_writes == [("w", "x", 5)]
    assert copied.parent_config == cfg("dst", checkpoint_id=c1["configurable"]["checkpoint_id"])
    assert sorted(t.metadata["step"] for t in saver.list(cfg("dst"))) == [0, 1, 2]

    saver.prune(["dst"], strategy="keep_latest")
    assert [t.metadata["step"] for t in saver.list(cfg("dst"))] == [2]
    assert client.hlen("pacore:{dst}:blobs") == 1  # values only dropped checkpoints used: gone
    assert saver.get_tuple(cfg("dst")).pending_writes == [("w", "x", 5)]

    saver.delete_for_runs(["r2"])  # copies keep their metadata, so dst's step 2 goes too
    assert [t.metadata["step"] for t in saver.list(cfg("src"))] == [1]
    assert client.hlen("pacore:{src}:writes") == 0 and client.hlen("pacore:{src}:blobs") == 1
    assert saver.get_tuple(cfg("dst")) is None and not client.keys("pacore:{dst}:*")
    assert client.zrange("pacore:threads", 0, -1) == [b"src"]  # emptied threads leave the registry
    saver.delete_for_runs(["r1"])
    assert saver.get_tuple(cfg("src")) is None

    put(saver, "gone", step=1)
    saver.delete_thread("gone")
    assert saver.get_tuple(cfg("gone")) is None and not client.keys("pacore:{gone}:*")
    saver.prune(["dst"], strategy="delete")
    assert list(saver.list(None)) == [] and client.keys("*") == []
    with pytest.raises(ValueError, match="unknown prune strategy"):
        saver.prune(["dst"], strategy="keep_some")


def test_ttl_is_set_on_every_thread_key_and_refreshed_by_each_write(redis_url):
    with RedisSaver.from_conn_string(redis_url, ttl=60) as saver:
        client = saver.client
        c1 = put(saver, "t", step=1)
        c2 = put(saver, "t", parent=c1, step=2)
        saver.put_writes(c1, [("x", 1)], task_id="a")
        keys = client.keys("pacore:{t}:*")
        assert len(keys) == 6 and all(55_000 < client.pttl(k) <= 60_000 for k in keys)
        assert client.zscore("pacore:threads", "t") == pytest.approx(time.time() + 60, abs=5)
        for k in keys:
            client.pexpire(k, 5_000)
        saver.put_writes(c2, [("x", 2)], task_id="b")  # any write refreshes the whole thread
        assert all(client.pttl(k) > 55_000 for k in keys)
        for k in keys:
            client.pexpire(k, 5_000)
        put(saver, "t", parent=c2, step=3)
        assert all(client.pttl(k) > 55_000 for k in keys)
        saver.copy_thread("t", "copy")
        assert all(client.pttl(k) > 55_000 for k in client.keys("pacore:{copy}:*"))
    with RedisSaver.from_conn_string(redis_url) as forever:
        put(forever, "kept")
        assert {forever.client.pttl(k) for k in forever.client.keys("pacore:{kept}:*")} == {-1}


def test_thread_keys_share_one_cluster_slot(saver):
    c1 = put(saver, "thread-42")
    put(saver, "thread-42", ns="child:1")
    saver.put_writes(c1, [("x", 1)], task_id="t")
    keys = saver.client.keys("pacore:{thread-42}:*")
    assert len(keys) == 6  # a fixed set, whatever the namespaces and history
    assert len({key_slot(k) for k in keys}) == 1
    assert key_slot(b"pacore:{thread-42}:ids") == key_slot(b"thread-42")


class RecordingRedis(redis.Redis):
    """Records every command the saver sends (it sends everything through pipelines)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        send = pipe.execute_command

        def record(*args, **options):
            self.sent.append(args)
            return send(*args, **options)

        pipe.execute_command = record
        return pipe


def test_hot_path_touches_only_the_threads_keys(redis_url):
    client = RecordingRedis.from_url(redis_url)
    saver = RedisSaver(client)
    put(saver, "neighbour")
    client.config_resetstat()
    client.sent.clear()
    c1 = put(saver, "t", step=1)
    c2 = put(saver, "t", parent=c1, step=2)
    saver.put_writes(c2, [("x", 1)], task_id="t1")
    saver.get_tuple(cfg("t"))
    saver.get_tuple(c1)
    list(saver.list(cfg("t"), limit=5))
    saver.get_delta_channel_history(config=c2, channels=["x"])
    stats = client.info("commandstats")
    assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats), sorted(stats)
    # Each of the 3 writes is one MULTI/EXEC, and so is each load's first read, which takes
    # the thread's census with it: put's parent, the latest get_tuple (2: the index, then
    # the checkpoint), get_tuple by id and list.
    assert stats["cmdstat_exec"]["calls"] == 3 + 5
    touched = {args[1] for args in client.sent}
    assert touched <= {*saver.ops.layout.keys("t"), "pacore:threads"}, touched
    client.close()


def test_unreachable_redis_is_a_clear_error():
    port = free_port()  # nothing listens once closed
    url = f"redis://:secret-pw@127.0.0.1:{port}/0"
    with RedisSaver.from_conn_string(url) as saver, pytest.raises(RedisUnavailableError) as caught:
        saver.get_tuple(cfg("t"))
    message = str(caught.value)
    assert message.startswith(f"Redis at redis://127.0.0.1:{port}/0 is unreachable: ")
    assert "secret-pw" not in message
    assert isinstance(caught.value, builtins.ConnectionError)
    assert isinstance(caught.value, redis.exceptions.ConnectionError)

    async def async_attempt():
        async with AsyncRedisSaver.from_conn_string(url) as asaver:
            await asaver.asetup()

    with pytest.raises(RedisUnavailableError, match=f"127.0.0.1:{port}/0 is unreachable"):
        asyncio.run(async_attempt())


def test_bad_options_are_refused(redis_url):
    with pytest.raises(ValueError, match="decode_responses"):
        RedisSaver(redis.Redis.from_url(redis_url, decode_responses=True))
    with pytest.raises(ValueError, match="braces"):
        RedisSaver(redis.Redis.from_url(redis_url), key_prefix="a{b}")
    with pytest.raises(ValueError, match="ttl"):
        RedisSaver(redis.Redis.from_url(redis_url), ttl=0)


def test_key_prefix_isolates_apps(redis_url):
    client = redis.Redis.from_url(redis_url)
    a, b = RedisSaver(client, key_prefix="app-a"), RedisSaver(client, key_prefix="app-b")
    put(a, "t", step=1)
    assert b.get_tuple(cfg("t")) is None and a.get_tuple(cfg("t")) is not None
    assert list(b.list(None)) == [] and len(list(a.list(None))) == 1


def test_allowlisted_clone_serializes_with_its_own_serde(redis_url):
    # LangGraph clones the saver with a wider msgpack allowlist under LANGGRAPH_STRICT_MSGPACK.
    serde = JsonPlusSerializer(allowed_msgpack_modules=())
    saver = RedisSaver(redis.Redis.from_url(redis_url), serde=serde)
    clone = saver.with_allowlist([("tests.test_checkpoint_sync", "State")])
    assert clone is not saver and clone.serde is not saver.serde
    assert clone.ops.layout.serde is clone.serde and saver.ops.layout.serde is saver.serde
    assert clone.client is saver.client


def test_every_operation_on_a_redis_cluster(redis_cluster_url):
    # A Cluster refuses a transaction over keys in several slots: this proves the layout.
    client = RedisCluster.from_url(redis_cluster_url)
    saver = RedisSaver(client, ttl=60)
    assert saver.ops.cluster
    c1 = put(saver, "a", step=1, run_id="r1")
    c2 = put(saver, "a", parent=c1, step=2, run_id="r2")
    saver.put_writes(c2, [("x", 1)], task_id="w")
    put(saver, "b", step=1, ns="child:1")
    assert saver.get_tuple(cfg("a")).pending_writes == [("w", "x", 1)]
    assert sorted(t.metadata["step"] for t in saver.list(None)) == [1, 1, 2]
    assert saver.get_delta_channel_history(config=c2, channels=["x"])["x"]["seed"] == 1
    saver.copy_thread("a", "c")
    saver.prune(["c"])
    assert [t.metadata["step"] for t in saver.list(cfg("c"))] == [2]
    saver.delete_for_runs(["r1"])
    assert [t.metadata["step"] for t in saver.list(cfg("a"))] == [2]
    saver.delete_thread("b")
    assert sorted(t.config["configurable"]["thread_id"] for t in saver.list(None)) == ["a", "c"]
    graph = two_step_graph().compile(checkpointer=saver)
    assert graph.invoke({"log": []}, {"configurable": {"thread_id": "g"}})["log"] == ["a", "b"]
    client.close()


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def two_step_graph(state=State):
    builder = StateGraph(state)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_node("b", lambda s: {"log": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    return builder


def test_real_graph_with_sync_saver(saver):
    graph = two_step_graph().compile(checkpointer=saver, interrupt_before=["b"])
    config = {"configurable": {"thread_id": "g"}}
    graph.invoke({"log": []}, config)
    assert graph.get_state(config).next == ("b",)
    out = graph.invoke(None, config)  # resumes from what Redis holds
    assert out["log"] == ["a", "b"]
    assert graph.get_state(config).next == ()
    assert len(list(graph.get_state_history(config))) == 4


def _append(state, batches):
    return state + [x for batch in batches for x in batch]


class DeltaState(TypedDict):
    log: Annotated[list[str], DeltaChannel(_append, snapshot_frequency=5)]


def test_delta_channel_history_and_delta_aware_prune(saver):
    graph = two_step_graph(DeltaState).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "d"}}
    for _ in range(4):
        graph.invoke({"log": ["in"]}, config)
    expected = ["in", "a", "b"] * 4
    assert graph.get_state(config).values["log"] == expected
    head = saver.get_tuple(config).config
    # the one-walk override returns what LangGraph's generic walk does
    for target in [head, *[t.config for t in saver.list(config, limit=6)]]:
        mine = saver.get_delta_channel_history(config=target, channels=["log", "nope"])
        generic = BaseCheckpointSaver.get_delta_channel_history(
            saver, config=target, channels=["log", "nope"]
        )
        assert mine == generic
    before = len(list(saver.list(config)))
    saver.prune(["d"], strategy="keep_latest")
    kept = len(list(saver.list(config)))
    assert 1 < kept < before  # ancestors back to the last snapshot stay, older ones go
    assert graph.get_state(config).values["log"] == expected
    graph.invoke({"log": ["in"]}, config)
    assert graph.get_state(config).values["log"] == [*expected, "in", "a", "b"]


async def test_real_graph_with_async_saver(redis_url):
    async with AsyncRedisSaver.from_conn_string(redis_url, ttl=30) as saver:
        await saver.asetup()
        graph = two_step_graph().compile(checkpointer=saver, interrupt_before=["b"])
        config = {"configurable": {"thread_id": "ga"}}
        await graph.ainvoke({"log": []}, config)
        assert (await graph.aget_state(config)).next == ("b",)
        out = await graph.ainvoke(None, config)
        assert out["log"] == ["a", "b"]
        assert (await graph.aget_state(config)).values["log"] == ["a", "b"]
        # sync methods work from another thread, and refuse to block the saver's loop
        latest = await asyncio.to_thread(saver.get_tuple, config)
        assert latest.checkpoint["channel_values"]["log"] == ["a", "b"]
        assert len(await asyncio.to_thread(lambda: list(saver.list(config)))) == 4
        with pytest.raises(asyncio.InvalidStateError, match="async methods"):
            saver.get_tuple(config)


async def test_async_cluster_client(redis_cluster_url):
    client = aredis.RedisCluster.from_url(redis_cluster_url)
    saver = AsyncRedisSaver(client)
    graph = two_step_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "ac"}}
    assert (await graph.ainvoke({"log": []}, config))["log"] == ["a", "b"]
    await saver.acopy_thread("ac", "ac2")
    await saver.aprune(["ac2"])
    assert [t.metadata["step"] async for t in saver.alist(cfg("ac2"))] == [2]
    await saver.adelete_thread("ac")
    assert await saver.aget_tuple(config) is None
    await client.aclose()
