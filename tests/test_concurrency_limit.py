"""One concurrency limit on the model object, shared by every run, thread and event loop."""

import asyncio
import threading

import pytest

from pacore_graph import create_pacore_graph
from pacore_graph.backends.limit import CallLimit
from pacore_graph.testing import Reply
from tests.conftest import Gate, model_for


def ok(body):
    return Reply(content="<think>t</think>ok")


async def test_many_runs_never_put_more_calls_in_flight_than_the_models_limit(scripted):
    gate = Gate(ok)
    server = scripted(gate)
    model = model_for(server, max_concurrent_requests=2)
    graph = create_pacore_graph(model, rounds=4).compile()
    gate.open_when(lambda: server.in_flight >= 2)
    # Three runs of max_concurrency=2 could put 6 calls in flight without the model's limit.
    outs = await asyncio.gather(
        *(
            graph.ainvoke({"messages": [("user", f"q{i}")]}, {"max_concurrency": 2})
            for i in range(3)
        )
    )
    assert [o["messages"][-1].content for o in outs] == ["ok"] * 3
    assert len(server.requests) == 3 * 5
    assert server.max_in_flight == 2


@pytest.mark.parametrize("streaming", [False, True])
def test_sync_and_async_runs_share_one_limit(scripted, streaming):
    gate = Gate(ok)
    server = scripted(gate)
    model = model_for(server, max_concurrent_requests=1, streaming=streaming)
    graph = create_pacore_graph(model, rounds=3).compile()
    gate.open_when(lambda: len(server.requests) >= 1)
    sync_run = threading.Thread(target=graph.invoke, args=({"messages": [("user", "a")]},))
    sync_run.start()
    asyncio.run(graph.ainvoke({"messages": [("user", "b")]}))
    sync_run.join(60)
    assert not sync_run.is_alive()
    assert len(server.requests) == 2 * 4
    assert server.max_in_flight == 1


async def test_a_cancelled_waiter_gives_up_its_place():
    limit = CallLimit(1)
    async with limit.ahold():
        waiter = asyncio.ensure_future(limit.ahold().__aenter__())
        await asyncio.sleep(0)  # let it queue
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    # The slot came back: a new caller gets it at once, from another thread too.
    got = threading.Event()

    def take():
        with limit.hold():
            got.set()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(10)
    assert got.is_set() and limit.in_flight == 0


def test_the_limit_is_validated():
    with pytest.raises(ValueError, match="at least 1"):
        CallLimit(0)
