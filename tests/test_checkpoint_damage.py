"""Redis that loses or refuses data, under the savers: an eviction policy refused at setup, a
thread missing a key (or a field) is a typed error on load, never a silent resume, and a
wrong password or a full Redis is one clear error."""

import asyncio
import logging
import re

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from pacore_graph import DamagedThreadError, QuorumError, create_pacore_graph
from pacore_graph.checkpoints import (
    AsyncRedisSaver,
    RedisAuthenticationError,
    RedisEvictionPolicyError,
    RedisOutOfMemoryError,
    RedisSaver,
)
from pacore_graph.checkpoints.ops import Batch, Emit
from tests.conftest import FinalFailsOnce, model_for
from tests.test_checkpoint_sync import cfg, put

PROBLEM = "What is 17 * 23?"


# -- eviction policy ----------------------------------------------------------------------


def test_setup_refuses_a_redis_that_may_evict_and_says_how_to_fix_it(own_redis):
    server = own_redis("--maxmemory", "1mb", "--maxmemory-policy", "allkeys-lru")
    with RedisSaver.from_conn_string(server.url) as saver:
        with pytest.raises(RedisEvictionPolicyError) as caught:
            saver.setup()
        message = str(caught.value)
        assert "\n" not in message
        assert f"Redis at redis://127.0.0.1:{server.port}/0" in message
        assert "maxmemory-policy is allkeys-lru" in message
        assert "CONFIG SET maxmemory-policy noeviction" in message
        assert "allow_eviction=True" in message
        assert isinstance(caught.value, ValueError)
        saver.setup(allow_eviction=True)  # accepted when asked for

    async def async_setup() -> None:
        async with AsyncRedisSaver.from_conn_string(server.url) as asaver:
            await asaver.asetup()

    with pytest.raises(RedisEvictionPolicyError, match="allkeys-lru"):
        asyncio.run(async_setup())


@pytest.mark.parametrize(
    ("policy", "ttl", "refused"),
    [
        ("noeviction", None, False),
        ("noeviction", 60, False),
        ("volatile-lru", None, False),  # no key of the saver has a TTL: none can go
        ("volatile-ttl", None, False),
        ("volatile-lru", 60, True),  # every key has one
        ("volatile-random", 60, True),
        ("allkeys-lru", None, True),
        ("allkeys-lfu", None, True),
        ("allkeys-random", None, True),
    ],
)
def test_which_policies_keep_checkpoints(own_redis, policy, ttl, refused):
    server = own_redis("--maxmemory-policy", policy)
    with RedisSaver.from_conn_string(server.url, ttl=ttl) as saver:
        if refused:
            with pytest.raises(RedisEvictionPolicyError, match=f"maxmemory-policy is {policy}"):
                saver.setup()
        else:
            saver.setup()


def test_policy_is_read_from_info_when_config_is_refused(own_redis):
    # Managed Redis often renames or forbids CONFIG; INFO memory still tells the policy.
    server = own_redis("--rename-command", "CONFIG", "", "--maxmemory-policy", "allkeys-lru")
    with (
        RedisSaver.from_conn_string(server.url) as saver,
        pytest.raises(RedisEvictionPolicyError, match="allkeys-lru"),
    ):
        saver.setup()


def test_a_redis_that_tells_no_policy_is_used_with_a_warning(own_redis, caplog):
    acl = ["--user", "default", "on", "nopass", "~*", "&*", "+@all", "-config", "-info"]
    server = own_redis(*acl, "--maxmemory-policy", "allkeys-lru")
    with RedisSaver.from_conn_string(server.url) as saver:
        with caplog.at_level(logging.WARNING, logger="pacore_graph.checkpoints"):
            saver.setup()
        put(saver, "t", step=1)  # the saver works
        assert saver.get_tuple(cfg("t")).metadata["step"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot check that its maxmemory-policy" in warnings[0]


# -- damaged threads -----------------------------------------------------------------------


@pytest.mark.parametrize("lost", ["writes", "blobs", "meta", "cp", "ids", "wix"])
def test_a_thread_missing_a_key_is_damaged_never_resumed(scripted, redis_url, lost):
    server = scripted(FinalFailsOnce())
    config = {"configurable": {"thread_id": "t"}}
    question = {"messages": [("user", PROBLEM)]}

    async def scenario() -> None:
        async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
            await saver.asetup()
            graph = create_pacore_graph(model_for(server), rounds=2).compile(checkpointer=saver)
            with pytest.raises(QuorumError):  # the final call failed: the run stops there
                await graph.ainvoke(question, config, durability="sync")
            assert len(server.requests) == 3
            client = redis.Redis.from_url(redis_url)
            assert client.delete(f"pacore:{{t}}:{lost}") == 1
            client.close()

            for resume in (graph.aget_state(config), graph.ainvoke(None, config)):
                with pytest.raises(DamagedThreadError) as caught:
                    await resume
                assert caught.value.thread_id == "t"
                assert f"pacore:{{t}}:{lost}" in str(caught.value)
                assert "delete_thread('t')" in str(caught.value)
            assert len(server.requests) == 3  # nothing was asked on the damaged thread

            await saver.adelete_thread("t")  # the documented way to start over
            out = await graph.ainvoke(question, config, durability="sync")
            assert out["messages"][-1].content == "\\boxed{391}"
            assert len(server.requests) == 6  # asked again from the start

    asyncio.run(scenario())


def test_a_new_thread_and_another_namespace_are_not_damage(redis_url):
    with RedisSaver.from_conn_string(redis_url) as saver:
        assert saver.get_tuple(cfg("never-written")) is None
        assert list(saver.list(cfg("never-written"))) == []
        put(saver, "t", step=1)
        assert saver.get_tuple(cfg("t", ns="child:1")) is None  # only the root ns has any
        # durability="async" may store a task's writes before the thread's first checkpoint
        saver.put_writes(cfg("early", checkpoint_id="1"), [("x", 1)], task_id="task")
        assert saver.get_tuple(cfg("early")) is None


def test_values_that_outlive_every_checkpoint_are_damage(redis_url):
    with RedisSaver.from_conn_string(redis_url) as saver:
        put(saver, "t", step=1)
        saver.client.delete("pacore:{t}:ids", "pacore:{t}:cp", "pacore:{t}:meta")
        with pytest.raises(DamagedThreadError) as caught:
            saver.get_tuple(cfg("t"))  # not a new thread: its values are still there
        assert [m.split()[1] for m in caught.value.missing] == [
            "pacore:{t}:ids",
            "pacore:{t}:cp",
            "pacore:{t}:meta",
        ]


def test_a_lost_field_is_damage_where_it_is_read(redis_url):
    with RedisSaver.from_conn_string(redis_url) as saver:
        c1 = put(saver, "t", step=1, values={"x": 1, "y": 2})
        saver.put_writes(c1, [("x", 10), ("y", 20)], task_id="task")
        c2 = put(saver, "t", parent=c1, step=2, values={"x": 3, "y": 2}, new=["x"])
        client = saver.client
        (write_field, _) = client.zrange("pacore:{t}:wix", 0, 1)
        client.hdel("pacore:{t}:writes", write_field)  # one write of c1, not the whole key
        # c2 reads whole (its values are there, it has no writes) ...
        assert saver.get_tuple(c2).checkpoint["channel_values"] == {"x": 3, "y": 2}
        # ... but c1 and the delta history through it lack a write.
        with pytest.raises(DamagedThreadError, match=r"1 pending writes of checkpoint .* in "):
            saver.get_tuple(c1)
        with pytest.raises(DamagedThreadError, match=re.escape("pacore:{t}:writes")):
            saver.get_delta_channel_history(config=c2, channels=["x"])
        # A value c2 shares with c1 (y was not rewritten) is damage for both.
        blob = next(f for f in client.hkeys("pacore:{t}:blobs") if b"\x00y\x00" in f)
        client.hdel("pacore:{t}:blobs", blob)
        with pytest.raises(DamagedThreadError, match="1 channel values of checkpoint"):
            saver.get_tuple(cfg("t"))
        client.hdel("pacore:{t}:meta", "\x00" + c2["configurable"]["checkpoint_id"])
        with pytest.raises(DamagedThreadError, match=re.escape("pacore:{t}:meta")):
            list(saver.list(cfg("t")))


def test_a_checkpoint_deleted_between_two_reads_is_not_damage(redis_url):
    # A load reads a checkpoint, then its values: a prune or delete_thread in between is
    # ordinary concurrency. The operation is stepped by hand to put the delete there.
    with RedisSaver.from_conn_string(redis_url) as saver:
        c1 = put(saver, "t", step=1)
        saver.put_writes(c1, [("x", 5)], task_id="task")
        op = saver.ops.get_tuple(c1)
        step = op.send(None)
        assert isinstance(step, Batch) and step.snapshot  # the checkpoint, its census
        step = op.send(saver._execute(step))
        assert isinstance(step, Batch) and not step.snapshot  # its values and writes
        saver.delete_thread("t")
        step = op.send(saver._execute(step))  # both missing now: read again, atomically
        assert not isinstance(step, Emit) and step.snapshot
        with pytest.raises(StopIteration) as done:
            op.send(saver._execute(step))
        assert done.value.value is None  # gone, as if deleted before the load


# -- refusals ------------------------------------------------------------------------------


def test_a_wrong_password_is_authentication_failed(own_redis):
    server = own_redis("--requirepass", "the-right-password")
    url = f"redis://:hunter2@127.0.0.1:{server.port}/0"
    for attempt_url, why in [(url, "wrong password"), (server.url, "it needs a password")]:
        with (
            RedisSaver.from_conn_string(attempt_url) as saver,
            pytest.raises(RedisAuthenticationError) as caught,
        ):
            saver.setup()
        message = str(caught.value)
        assert message.startswith(f"Redis at redis://127.0.0.1:{server.port}/0: ")
        assert "authentication failed" in message and why in message
        assert "unreachable" not in message and "hunter2" not in message
        assert isinstance(caught.value, PermissionError)
    right = f"redis://:the-right-password@127.0.0.1:{server.port}/0"
    with RedisSaver.from_conn_string(right) as saver:
        saver.setup()


def test_a_full_redis_refuses_writes_with_one_clear_error(own_redis):
    server = own_redis("--maxmemory-policy", "noeviction")
    with RedisSaver.from_conn_string(server.url) as saver:
        saver.setup()
        c1 = put(saver, "t", step=1, values={"x": "secret-ish value"})
        saver.client.config_set("maxmemory", 1)  # full: noeviction refuses every write
        cp = empty_checkpoint()
        with pytest.raises(RedisOutOfMemoryError) as caught:
            saver.put(c1, cp, {"step": 2}, {})
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"Redis at redis://127.0.0.1:{server.port}/0 is out of memory")
        assert "raise maxmemory" in message
        assert "HSET" not in message and "secret-ish" not in message  # no data in it
        assert isinstance(caught.value, OSError)
        # What was stored is intact, and reads work on a full Redis.
        assert saver.get_tuple(cfg("t")).metadata["step"] == 1
        assert [t.metadata["step"] for t in saver.list(cfg("t"))] == [1]


def test_the_policy_is_checked_through_a_cluster_client(redis_cluster_url):
    # A Cluster client asks the node it talks to first (each node has its own policy).
    client = RedisCluster.from_url(redis_cluster_url)
    RedisSaver(client).setup()
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(RedisEvictionPolicyError, match=r"\(cluster\): maxmemory-policy"):
            RedisSaver(client).setup()

        async def async_setup() -> None:
            aclient = AsyncRedisCluster.from_url(redis_cluster_url)
            try:
                await AsyncRedisSaver(aclient).asetup()
            finally:
                await aclient.aclose()

        with pytest.raises(RedisEvictionPolicyError, match="allkeys-lru"):
            asyncio.run(async_setup())
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()
