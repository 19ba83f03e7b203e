"""One writer per thread: the Redis savers' lease, its fencing of writes, and the thread runner
holding it (sync and async saver, plain Redis and a one-node Cluster)."""

import asyncio
import os
import re
import socket
import threading

import pytest
import redis
import redis.asyncio as aredis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from redis.cluster import RedisCluster

from pacore_graph import (
    LeaseLostError,
    ThreadBusyError,
    arun_thread,
    create_pacore_graph,
)
from pacore_graph.checkpoints import AsyncRedisSaver, RedisSaver
from pacore_graph.checkpoints.layout import LEASE_CONFIG_KEY
from pacore_graph.testing import Reply
from tests.conftest import Held, model_for, wait_for
from tests.test_checkpoint_sync import cfg, put, two_step_graph

HOLDER = f"pid {os.getpid()} on {socket.gethostname()}"


def lease_key(thread_id):
    return f"pacore:{{{thread_id}}}:lease"


def stored(client, thread_id):
    """Everything Redis holds for a thread, but its lease: what a fenced write must not change."""
    out = {}
    for key in sorted(client.keys(f"pacore:{{{thread_id}}}:*")):
        kind = client.type(key)
        if kind == b"hash":
            out[key] = client.hgetall(key)
        elif kind == b"zset":
            out[key] = client.zrange(key, 0, -1)
    return out


@pytest.fixture(params=["redis", "cluster"])
def url_and_cluster(request):
    if request.param == "redis":
        return request.getfixturevalue("redis_url"), False
    return request.getfixturevalue("redis_cluster_url"), True


def sync_saver(url, cluster, **kwargs):
    client = RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    return RedisSaver(client, **kwargs)


def async_saver(url, cluster, **kwargs):
    client = aredis.RedisCluster.from_url(url) if cluster else aredis.Redis.from_url(url)
    return AsyncRedisSaver(client, **kwargs)


def test_sync_lease_busy_wait_and_release(url_and_cluster):
    saver = sync_saver(*url_and_cluster)
    with saver.lease("t") as held:
        assert held.token.startswith(f"{os.getpid()}@")
        with pytest.raises(ThreadBusyError) as busy, saver.lease("t"):
            pass
        assert str(busy.value).startswith(f"thread t is busy: another run holds it ({HOLDER}, ")
        assert re.search(r", lapsing in \d+\.\d s unless renewed\); wait for it ", str(busy.value))
        assert busy.value.thread_id == "t" and busy.value.holder == HOLDER
        waited = pytest.raises(ThreadBusyError, match=r"thread t is busy after waiting 0\.2 s")
        with waited, saver.lease("t", wait=0.2):
            pass
        with saver.lease("other"):  # leases are per thread
            pass

        # A waiter gets the thread once the holder lets go, and is told who it waits for.
        told, got = [], threading.Event()

        def waiter():
            with saver.lease("t", wait=True, on_wait=told.append):
                got.set()

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_for(lambda: told == [HOLDER])
        assert not got.is_set()
    thread.join(timeout=10)
    assert got.is_set()
    assert not saver.client.exists(lease_key("t"))  # released on exit
    saver.client.close()


def test_fenced_writes_of_the_sync_saver(url_and_cluster):
    saver = sync_saver(*url_and_cluster)
    client = saver.client
    with saver.lease("t") as held:
        config = held.bind(cfg("t"))
        c1 = saver.put(config, *_checkpoint(1))
        saver.put_writes(held.bind(c1), [("x", 1)], task_id="w1")
        assert saver.get_tuple(cfg("t")).pending_writes == [("w1", "x", 1)]
        # The token never reaches the checkpoint's metadata.
        assert LEASE_CONFIG_KEY not in saver.get_tuple(cfg("t")).metadata

        client.set(lease_key("t"), "another run's token")  # the lease lapsed and was taken
        before = stored(client, "t")
        with pytest.raises(LeaseLostError, match="thread t: this run lost its lease"):
            saver.put_writes(held.bind(c1), [("x", 2)], task_id="w2")
        with pytest.raises(LeaseLostError):
            saver.put(held.bind(c1), *_checkpoint(2))
        assert stored(client, "t") == before  # nothing of either landed
        client.delete(lease_key("t"))  # ... or lapsed and nobody holds it
        with pytest.raises(LeaseLostError):
            saver.put_writes(held.bind(c1), [("x", 3)], task_id="w3")
        assert stored(client, "t") == before
        # Writes without a token (a plain graph.invoke) are not fenced, as before.
        put(saver, "t", parent=c1, step=3)
        assert saver.get_tuple(cfg("t")).metadata["step"] == 3
    client.close()


def _checkpoint(step):
    cp = empty_checkpoint()
    cp["channel_values"] = {"x": step}
    cp["channel_versions"] = {"x": f"{step:032}.0"}
    return cp, {"step": step}, {"x": cp["channel_versions"]["x"]}


def test_sync_graph_runs_under_the_lease_and_is_fenced_when_it_is_lost(url_and_cluster):
    saver = sync_saver(*url_and_cluster)
    graph = two_step_graph().compile(checkpointer=saver, interrupt_before=["b"])
    config = {"configurable": {"thread_id": "g"}}
    with saver.lease("g") as held:
        graph.invoke({"log": []}, held.bind(config))
        saver.client.set(lease_key("g"), "another run's token")
        before = stored(saver.client, "g")
        with pytest.raises(LeaseLostError):
            graph.invoke(None, held.bind(config))
        assert stored(saver.client, "g") == before
    assert graph.get_state(config).next == ("b",)  # the stored thread is as it was
    saver.client.close()


async def test_async_graph_writes_are_fenced_by_the_lease(url_and_cluster):
    # A long TTL: no renewal runs within the test, so only the fence stops the writes.
    saver = async_saver(*url_and_cluster, lease_ttl=60)
    watcher = redis.Redis.from_url(url_and_cluster[0])
    graph = two_step_graph().compile(checkpointer=saver, interrupt_before=["b"])
    config = {"configurable": {"thread_id": "ag"}}
    async with saver.alease("ag") as held:
        await graph.ainvoke({"log": []}, held.bind(config))
        latest = await saver.aget_tuple(config)
        assert LEASE_CONFIG_KEY not in latest.metadata
        watcher.set(lease_key("ag"), "another run's token")
        before = stored(watcher, "ag")
        with pytest.raises(LeaseLostError, match="thread ag: this run lost its lease"):
            await graph.ainvoke(None, held.bind(config))
        with pytest.raises(LeaseLostError):
            await saver.aput_writes(held.bind(latest.config), [("log", ["x"])], task_id="w")
        assert stored(watcher, "ag") == before
    assert watcher.get(lease_key("ag")) == b"another run's token"  # never released by us
    assert (await graph.aget_state(config)).next == ("b",)
    await saver.client.aclose()
    watcher.close()


def test_sync_lease_is_renewed_while_held(redis_url):
    saver = sync_saver(redis_url, False, lease_ttl=0.6)
    with saver.lease("t") as held:
        wait_for(rising_ttl(saver.client, "t", 3))  # outlived its TTL: the keeper renews it
        assert not held.lost
    assert not saver.client.exists(lease_key("t"))
    saver.client.close()


async def test_async_lease_busy_renewed_and_released(url_and_cluster):
    saver = async_saver(*url_and_cluster, lease_ttl=0.6)
    watcher = redis.Redis.from_url(url_and_cluster[0])
    async with saver.alease("t") as held:
        with pytest.raises(ThreadBusyError, match=r"thread t is busy: another run holds it \(pid "):
            async with saver.alease("t"):
                pass
        # It outlives three renewals (a TTL): the keeper task extends it.
        await asyncio.to_thread(wait_for, rising_ttl(watcher, "t", 3))
        assert not held.lost
        told = []
        waiter = asyncio.create_task(_enter(saver.alease("t", wait=True, on_wait=told.append)))
        await asyncio.to_thread(wait_for, lambda: told == [HOLDER])
        assert not waiter.done()
    await asyncio.wait_for(waiter, 10)  # it got the thread once we let go
    assert not await saver.client.exists(lease_key("t"))
    await saver.client.aclose()
    watcher.close()


def rising_ttl(client, thread_id, times):
    """A predicate: the lease's remaining TTL has gone up ``times`` times (renewals)."""
    seen = [client.pttl(lease_key(thread_id))]
    rises = []

    def check():
        now = client.pttl(lease_key(thread_id))
        if now > seen[-1]:
            rises.append(now)
        seen.append(now)
        return len(rises) >= times

    return check


async def _enter(lease):
    async with lease as held:
        return held


QUESTION = {"messages": [("user", "What is 17 * 23?")]}


async def test_a_second_run_on_a_live_thread_is_busy_or_waits(scripted, url_and_cluster):
    release = threading.Event()
    server = scripted(Held(0, release=release))
    saver = async_saver(*url_and_cluster)
    graph = create_pacore_graph(model_for(server), rounds=[2]).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "busy"}}
    first = asyncio.create_task(arun_thread(graph, QUESTION, config))
    await asyncio.to_thread(wait_for, lambda: len(server.requests) == 2)
    with pytest.raises(ThreadBusyError, match="thread busy is busy"):
        await arun_thread(graph, QUESTION, config)
    watcher = redis.Redis.from_url(url_and_cluster[0])
    watcher.config_resetstat()
    waiting = asyncio.create_task(arun_thread(graph, QUESTION, config, wait=True))
    # It tried the lease twice: it is waiting, and asked nothing meanwhile.
    await asyncio.to_thread(wait_for, lambda: _calls(watcher, "set") >= 2)
    assert not waiting.done() and len(server.requests) == 2
    watcher.close()
    release.set()
    status, state = await first
    again, stored_state = await waiting
    assert (status, again) == ("new", "finished")  # the waiter read back the answer
    assert stored_state["messages"][-1].content == state["messages"][-1].content
    assert len(server.requests) == 3
    assert [m.type for m in stored_state["messages"]] == ["human", "ai"]
    await saver.client.aclose()


async def test_a_run_whose_lease_is_taken_stops_and_writes_nothing(scripted, redis_url):
    calls = iter(range(1_000_000))

    def respond(body):  # the first call answers, the others hang until the client hangs up
        n = next(calls)
        return Reply(content=f"candidate {n}: 391", delay=0 if n == 0 else 60)

    server = scripted(respond)
    saver = async_saver(redis_url, False, lease_ttl=0.6)
    graph = create_pacore_graph(model_for(server), rounds=[3]).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "taken"}}
    run = asyncio.create_task(arun_thread(graph, QUESTION, config))
    client = redis.Redis.from_url(redis_url)
    try:
        # One trajectory finished (its write is in Redis), two are held.
        await asyncio.to_thread(wait_for, lambda: len(server.requests) == 3)
        await asyncio.to_thread(wait_for, lambda: _finished(client, "taken") == 1)
        client.set(lease_key("taken"), "another run's token")  # as after a stall
        before = stored(client, "taken")
        with pytest.raises(LeaseLostError, match="thread taken: this run lost its lease"):
            await asyncio.wait_for(run, 10)  # the renewal notices: the run is stopped
        wait_for(lambda: server.cancelled == 2, timeout=5)  # its held calls were dropped
        assert stored(client, "taken") == before
        assert client.get(lease_key("taken")) == b"another run's token"  # not released
    finally:
        client.close()
        await saver.client.aclose()


def _finished(client, thread_id):
    """Trajectories the thread holds as pending writes of its latest checkpoint."""
    latest = RedisSaver(client).get_tuple(cfg(thread_id))
    return sum(ch == "trajectories" for _, ch, _ in latest.pending_writes) if latest else 0


def _calls(client, command):
    return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


async def test_no_lease_without_a_redis_saver_or_with_leases_off(scripted, redis_url):
    server = scripted(lambda body: Reply(content="\\boxed{2}"))
    watcher = redis.Redis.from_url(redis_url)
    watcher.config_resetstat()
    client = aredis.Redis.from_url(redis_url)
    for saver in (InMemorySaver(), AsyncRedisSaver(client, lease_ttl=None)):
        graph = create_pacore_graph(model_for(server), rounds=[2]).compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "free"}}
        status, _ = await arun_thread(graph, {"messages": [("user", "1+1?")]}, config)
        assert status == "new"
    assert _calls(watcher, "set") == 0 and _calls(watcher, "eval") == 0
    assert _calls(watcher, "exec") > 0  # the Redis run wrote, unfenced
    await client.aclose()
    watcher.close()
