"""AsyncRedisSaver's concurrent writes: sent together, each landing or failing on its own."""

import asyncio

import redis
import redis.asyncio as aredis

from pacore_graph.checkpoints import AsyncRedisSaver


def cfg(thread_id: str) -> dict:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": "c1"}}


async def test_concurrent_writes_go_in_one_transaction_and_fail_alone(redis_url):
    watcher = redis.Redis.from_url(redis_url)
    watcher.set("pacore:{bad}:writes", "not a hash")
    watcher.config_resetstat()
    saver = AsyncRedisSaver(aredis.Redis.from_url(redis_url))
    threads = [f"t{i}" for i in range(20)] + ["bad"]
    results = await asyncio.gather(
        *(saver.aput_writes(cfg(t), [("x", t)], "task") for t in threads), return_exceptions=True
    )
    assert results[:-1] == [None] * 20
    assert isinstance(results[-1], redis.exceptions.ResponseError)  # WRONGTYPE: its own only
    assert watcher.info("commandstats")["cmdstat_exec"]["calls"] == 1
    assert all(watcher.hlen(f"pacore:{{{t}}}:writes") == 1 for t in threads[:-1])
    await saver.client.aclose()
    watcher.close()


async def test_a_write_cancelled_before_it_is_sent_is_not_sent(redis_url):
    saver = AsyncRedisSaver(aredis.Redis.from_url(redis_url))
    first = asyncio.create_task(saver.aput_writes(cfg("a"), [("x", 1)], "task"))
    second = asyncio.create_task(saver.aput_writes(cfg("b"), [("x", 2)], "task"))
    await asyncio.sleep(0)  # both queued; the sender has not run yet
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert first.cancelled() and second.result() is None
    assert await saver.client.hlen("pacore:{a}:writes") == 0
    assert await saver.client.hlen("pacore:{b}:writes") == 1
    await saver.client.aclose()
