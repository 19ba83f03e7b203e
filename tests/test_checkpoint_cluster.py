"""A Redis Cluster of three masters from a URL: ``redis+cluster://`` (or a ``redis://`` URL
of a node in cluster mode) gives a Cluster client to the savers, ``pacore solve``, ``pacore
serve`` and ``langgraph dev`` (a SIGKILLed ``pacore solve`` resuming on it: test_resume)."""

import pytest
import redis
from redis.cluster import RedisCluster, key_slot

from pacore_graph.checkpoints import AsyncRedisSaver, RedisSaver, connect
from tests.test_checkpoint_sync import cfg, put
from tests.test_lease import _checkpoint


def node_url(cluster_url):
    return cluster_url.replace("redis+cluster://", "redis://")


def test_a_url_gives_a_cluster_client_that_spreads_threads_over_the_masters(
    redis_cluster3_url,
):
    for url in (redis_cluster3_url, node_url(redis_cluster3_url)):  # named, or detected
        with RedisSaver.from_conn_string(url) as saver:
            assert isinstance(saver.client, RedisCluster) and saver.cluster
            saver.setup()
            threads = [f"t{i}" for i in range(12)]
            for thread in threads:
                with saver.lease(thread) as held:
                    saver.put(held.bind(cfg(thread)), *_checkpoint(1))
            owners = {
                saver.client.nodes_manager.get_node_from_slot(key_slot(f"{{{t}}}".encode())).port
                for t in threads
            }
            assert len(owners) == 3  # the threads live on all three masters
            assert [saver.get_tuple(cfg(t)).metadata["step"] for t in threads] == [1] * 12
            assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == set(threads)
            for thread in threads:
                saver.delete_thread(thread)
            assert list(saver.list(None)) == []


async def test_the_async_saver_takes_a_cluster_url(redis_cluster3_url):
    async with AsyncRedisSaver.from_conn_string(redis_cluster3_url) as saver:
        assert saver.cluster
        await saver.asetup()
        async with saver.alease("a") as held:
            await saver.aput(held.bind(cfg("a")), *_checkpoint(1))
        assert (await saver.aget_tuple(cfg("a"))).metadata["step"] == 1
        assert not await saver.client.exists("pacore:{a}:lease")


def test_a_plain_client_on_a_cluster_node_is_told_to_connect_as_a_cluster(redis_cluster3_url):
    client = connect(redis_cluster3_url)
    port = next(  # a node that does not own the thread's slot
        node.port
        for node in client.get_primaries()
        if node is not client.nodes_manager.get_node_from_slot(key_slot(b"{elsewhere}"))
    )
    client.close()
    saver = RedisSaver(redis.Redis(port=port), lease_ttl=None)
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        put(saver, "elsewhere", step=1)
    assert str(refused.value) == (
        f"Redis at redis://localhost:{port}/0 is a node of a Redis Cluster: connect to it as "
        "one (redis+cluster://host:port, or a RedisCluster client)"
    )
    saver.client.close()
