"""Several ``--base-url`` replicas: spread by outstanding requests, failover when one dies."""

import asyncio

from pacore_graph import ChatOpenAICompatible, create_pacore_graph
from pacore_graph.testing import Reply


def two_replica_model(a, b):
    return ChatOpenAICompatible(base_url=[a.base_url, b.base_url], model="scripted", api_key="k")


def test_trajectories_spread_over_replicas(scripted):
    a = scripted(lambda body: Reply(content="from a", delay=0.05))
    b = scripted(lambda body: Reply(content="from b", delay=0.05))
    graph = create_pacore_graph(two_replica_model(a, b), rounds=8).compile()
    asyncio.run(graph.ainvoke({"messages": [("user", "2+2?")]}))
    # 8 concurrent trajectories split evenly; the final call goes to either.
    assert sorted([len(a.requests), len(b.requests)]) == [4, 5]
    assert a.max_in_flight == b.max_in_flight == 4


def test_slow_replica_gets_fewer_calls(scripted):
    slow = scripted(lambda body: Reply(content="slow", delay=0.4))
    fast = scripted(lambda body: Reply(content="fast", delay=0.01))
    graph = create_pacore_graph(two_replica_model(slow, fast), rounds=12).compile()
    asyncio.run(graph.ainvoke({"messages": [("user", "2+2?")]}, config={"max_concurrency": 2}))
    # Least outstanding first: the fast replica frees its slot and takes most calls.
    assert len(fast.requests) >= 3 * len(slow.requests)


def test_failover_when_a_replica_dies(scripted):
    a = scripted(lambda body: Reply(content="from a"))
    b = scripted(lambda body: Reply(content="from b"))
    model = two_replica_model(a, b)
    graph = create_pacore_graph(model, rounds=4, retry_policy=None).compile()
    graph.invoke({"messages": [("user", "2+2?")]})
    assert a.requests and b.requests
    b.stop()
    before = len(a.requests)
    out = asyncio.run(graph.ainvoke({"messages": [("user", "3+3?")]}))
    assert out["messages"][-1].content == "from a"
    assert len(a.requests) - before == 5  # every trajectory failed over, none lost
    assert model.replicas[1].down_until > 0
