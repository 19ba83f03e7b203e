"""LangGraph's checkpointer conformance suite against AsyncRedisSaver on a real redis-server."""

import redis.asyncio as aredis
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from pacore_graph.checkpoints import AsyncRedisSaver


async def test_async_saver_passes_every_capability(redis_url):
    @checkpointer_test(name="AsyncRedisSaver")
    async def factory():
        client = aredis.Redis.from_url(redis_url)
        await client.flushall()
        yield AsyncRedisSaver(client, key_prefix="conformance")
        await client.aclose()

    report = await validate(factory)
    report.print_report()
    for cap in ALL_CAPABILITIES:
        result = report.results[cap.value]
        assert result.detected, f"{cap.value} not detected"
        assert result.passed is True and result.tests_failed == 0, (cap.value, result.failures)
        assert result.tests_passed > 0, cap.value
    assert report.conformance_level() == "FULL"
