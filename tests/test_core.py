"""The graph core's structure: no import cycle, no state shared through module globals, and
one mechanism that waits before a retry."""

from __future__ import annotations

import ast
import asyncio
from collections import OrderedDict
from pathlib import Path

import pytest
from langchain_core.language_models import FakeListChatModel
from langgraph.types import RetryPolicy

import pacore_graph
from pacore_graph import budget, create_pacore_graph, should_retry
from pacore_graph.context import DEFAULTS
from pacore_graph.messages import RoundPrompts
from pacore_graph.nodes import trajectory
from pacore_graph.testing import Reply
from tests.conftest import model_for, wait_for

PACKAGE = Path(pacore_graph.__file__).parent


def _imports(path: Path) -> set[str]:
    """The ``pacore_graph`` modules ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("pacore_graph"))
    return found


def test_the_graph_core_has_no_import_cycle():
    modules = {
        ".".join(("pacore_graph", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): p
        for p in PACKAGE.rglob("*.py")
    }
    core = {m for m in modules if m.count(".") == 1 or m.startswith("pacore_graph.nodes")}
    core -= {"pacore_graph.__init__", "pacore_graph", "pacore_graph.studio"}
    edges = {m: {i for i in _imports(modules[m]) if i in core and i != m} for m in core}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [m for m in sorted(core) if reaches(m, m, {m})] == []


def test_the_trajectory_node_keeps_its_state_on_itself():
    shared = (dict, list, set, OrderedDict, RoundPrompts)
    for module in (trajectory, budget):
        assert [
            name
            for name, value in vars(module).items()
            if isinstance(value, shared) and not name.startswith("__")
        ] == []
    node = trajectory.TrajectoryNode(FakeListChatModel(responses=["a"]), DEFAULTS)
    assert isinstance(node.prompts, RoundPrompts) and isinstance(
        node.trackers, budget.RoundTrackers
    )


PATIENT = RetryPolicy(initial_interval=600.0, jitter=False, max_attempts=2, retry_on=should_retry)
"""A backoff no test waits out: a retry that comes sooner followed the server's Retry-After."""


async def test_retry_after_takes_the_place_of_the_backoff(scripted):
    replies = iter([Reply(status=429, error="slow down", headers={"Retry-After": "0.2"})])
    server = scripted(lambda body: next(replies, Reply(content="<think>t</think>391")))
    graph = create_pacore_graph(model_for(server), rounds="1", retry_policy=PATIENT).compile()
    out = await asyncio.wait_for(graph.ainvoke({"messages": [("user", "17 * 23?")]}), 60)
    assert out["messages"][-1].content == "391"
    assert server.times[1] - server.times[0] >= 0.2  # the server's wait, and only that one


async def test_a_call_waiting_on_retry_after_holds_no_slot_of_the_models_limit(scripted):
    replies = iter([Reply(status=429, error="slow down", headers={"Retry-After": "60"})])
    server = scripted(lambda body: next(replies, Reply(content="<think>t</think>391")))
    model = model_for(server, max_concurrent_requests=1)
    graph = create_pacore_graph(model, rounds="2", retry_policy=PATIENT).compile()
    run = asyncio.ensure_future(graph.ainvoke({"messages": [("user", "17 * 23?")]}))
    try:
        # The other trajectory's call goes out while the first waits its 60 s.
        await asyncio.to_thread(wait_for, lambda: len(server.requests) >= 2)
        assert not run.done()
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
