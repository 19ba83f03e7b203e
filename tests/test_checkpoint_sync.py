"""RedisSaver (sync) on a real redis-server, and both savers under a real graph."""

import operator
from typing import Annotated

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import START, StateGraph
from redis.cluster import key_slot
from typing_extensions import TypedDict

from pacore_graph.checkpoints import AsyncRedisSaver, RedisSaver, RedisUnavailableError


def cfg(thread, ns="", checkpoint_id=None):
    c = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    if checkpoint_id:
        c["configurable"]["checkpoint_id"] = checkpoint_id
    return c


def put(saver, thread, parent=None, step=0, values=None, **meta):
    cp = empty_checkpoint()
    cp["channel_values"] = values or {"x": step}
    cp["channel_versions"] = {k: saver.get_next_version(None, None) for k in cp["channel_values"]}
    base = parent or cfg(thread)
    return saver.put(base, cp, {"step": step, **meta}, cp["channel_versions"])


@pytest.fixture
def saver(redis_url):
    with RedisSaver.from_conn_string(redis_url, ttl=60) as s:
        s.setup()
        yield s


def test_round_trip_list_filter_before_limit(saver):
    c1 = put(saver, "t", step=1, source="input")
    c2 = put(saver, "t", parent=c1, step=2, source="loop")
    c3 = put(saver, "t", parent=c2, step=3, source="loop")
    latest = saver.get_tuple(cfg("t"))
    assert latest.checkpoint["channel_values"] == {"x": 3}
    assert latest.parent_config == c2
    assert saver.get_tuple(c1).checkpoint["channel_values"] == {"x": 1}
    ids = [t.config["configurable"]["checkpoint_id"] for t in saver.list(cfg("t"))]
    assert ids == [c["configurable"]["checkpoint_id"] for c in (c3, c2, c1)]
    loops = list(saver.list(cfg("t"), filter={"source": "loop"}))
    assert [t.metadata["step"] for t in loops] == [3, 2]
    assert [t.metadata["step"] for t in saver.list(cfg("t"), before=c3)] == [2, 1]
    assert [t.metadata["step"] for t in saver.list(cfg("t"), limit=1)] == [3]
    assert saver.get_tuple(cfg("missing")) is None


def test_pending_writes_keep_first_unless_special(saver):
    c1 = put(saver, "t")
    saver.put_writes(c1, [("a", 1), ("b", 2)], task_id="task-1")
    saver.put_writes(c1, [("a", 99)], task_id="task-1")  # same (task, idx): kept as first
    saver.put_writes(c1, [("__error__", "boom")], task_id="task-2")
    saver.put_writes(c1, [("__error__", "boom again")], task_id="task-2")  # special: overwrite
    writes = saver.get_tuple(c1).pending_writes
    assert ("task-1", "a", 1) in writes and ("task-1", "b", 2) in writes
    assert ("task-2", "__error__", "boom again") in writes and len(writes) == 3


def test_delete_copy_prune(saver):
    c1 = put(saver, "src", step=1)
    c2 = put(saver, "src", parent=c1, step=2)
    saver.put_writes(c2, [("x", 5)], task_id="w")
    saver.copy_thread("src", "dst")
    copied = saver.get_tuple(cfg("dst"))
    assert copied.checkpoint["channel_values"] == {"x": 2}
    assert copied.pending_writes == [("w", "x", 5)]
    assert copied.config["configurable"]["thread_id"] == "dst"
    saver.prune(["dst"], strategy="keep_latest")
    assert [t.metadata["step"] for t in saver.list(cfg("dst"))] == [2]
    saver.delete_thread("src")
    assert saver.get_tuple(cfg("src")) is None
    assert list(saver.list(cfg("src"))) == []
    assert saver.get_tuple(cfg("dst")) is not None


def test_ttl_is_set_and_refreshed_on_write(saver):
    c1 = put(saver, "t")
    client = saver.client
    keys = [k for k in client.keys("pacore:{t}:*")]
    assert keys and all(0 < client.ttl(k) <= 60 for k in keys)
    for k in keys:
        client.expire(k, 5)
    put(saver, "t", parent=c1, step=2)
    assert all(client.ttl(k) > 5 for k in client.keys("pacore:{t}:*") if b":writes:" not in k)


def test_thread_keys_share_one_cluster_slot(saver):
    c1 = put(saver, "thread-42")
    put(saver, "thread-42", parent=cfg("thread-42", "child:1"))
    saver.put_writes(c1, [("x", 1)], task_id="t")
    keys = saver.client.keys("pacore:{thread-42}:*")
    assert len(keys) == 10  # ns set, 4 per namespace, one writes hash
    assert len({key_slot(k) for k in keys}) == 1


def test_hot_path_never_scans_the_keyspace(saver):
    client = saver.client
    client.config_resetstat()
    c1 = put(saver, "t", step=1)
    saver.put_writes(c1, [("x", 1)], task_id="t1")
    saver.get_tuple(cfg("t"))
    list(saver.list(cfg("t")))
    stats = client.info("commandstats")
    assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats), sorted(stats)
    assert "cmdstat_multi" in stats and "cmdstat_exec" in stats  # writes are transactions


def test_unreachable_redis_is_a_clear_error():
    with (
        socket_port() as port,
        RedisSaver.from_conn_string(f"redis://:secret-pw@127.0.0.1:{port}/0") as saver,
    ):
        with pytest.raises(RedisUnavailableError, match=f"127.0.0.1:{port}/0 is unreachable") as e:
            saver.get_tuple(cfg("t"))
        assert "secret-pw" not in str(e.value)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def two_step_graph():
    builder = StateGraph(State)
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
    out = graph.invoke(None, config)  # resume from Redis
    assert out["log"] == ["a", "b"]
    assert len(list(graph.get_state_history(config))) == 4


async def test_real_graph_with_async_saver(redis_url):
    async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
        graph = two_step_graph().compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "ga"}}
        out = await graph.ainvoke({"log": []}, config)
        assert out["log"] == ["a", "b"]
        assert (await graph.aget_state(config)).values["log"] == ["a", "b"]


class socket_port:
    """A loopback port where nothing listens."""

    def __enter__(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc):
        return False


def test_key_prefix_isolates_apps(redis_url):
    client = redis.Redis.from_url(redis_url)
    a, b = RedisSaver(client, key_prefix="app-a"), RedisSaver(client, key_prefix="app-b")
    put(a, "t", step=1)
    assert b.get_tuple(cfg("t")) is None and a.get_tuple(cfg("t")) is not None
