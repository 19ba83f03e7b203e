"""A trajectory dies by reference counting, failed or not: no cyclic garbage of ours that
only a full collection would free (issue 25: full collections over the trajectories in
flight were half a large run's time)."""

import asyncio
import gc
import os
from collections import Counter

import pytest

import pacore_graph
from pacore_graph import QuorumError, create_pacore_graph
from pacore_graph.testing import Reply
from tests.conftest import model_for
from tests.test_faults import FAST, PROBLEM, Script

OURS = os.path.dirname(pacore_graph.__file__)
SERVER = os.path.join(OURS, "testing.py")  # the scripted server's own, in this process


def ours(obj: object) -> str | None:
    """What names ``obj`` as the graph's (not the scripted server's), else None."""
    if isinstance(obj, BaseException):
        return f"exception {type(obj).__name__}"
    code = getattr(obj, "f_code", None) or getattr(obj, "cr_code", None)
    if code is not None and code.co_filename.startswith(OURS) and code.co_filename != SERVER:
        return f"{type(obj).__name__} {code.co_qualname}"
    module = type(obj).__module__
    if module.startswith("pacore_graph") and module != "pacore_graph.testing":
        return type(obj).__qualname__
    return None


def cyclic_garbage(job) -> Counter:
    """The graph's objects that ``job()`` left in reference cycles."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        job()
        gc.collect()
        return Counter(name for obj in gc.garbage if (name := ours(obj)) is not None)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_trajectories_failing_to_connect_leave_no_cycles(scripted):
    server = scripted(Script(lambda n: Reply(content="391")))
    graph = create_pacore_graph(model_for(server), rounds="2", retry_policy=FAST).compile()
    asyncio.run(graph.ainvoke({"messages": [("user", PROBLEM)]}))  # first-call set-up
    server.stop()  # every call now fails to connect, is retried, then fails for good

    async def run() -> None:
        with pytest.raises(QuorumError):
            await graph.ainvoke({"messages": [("user", PROBLEM)]})

    garbage = cyclic_garbage(lambda: asyncio.run(run()))
    garbage.pop("exception QuorumError", None)  # the run's own error, raised through LangGraph
    garbage.pop("frame compact", None)  # by the node that raised it
    assert garbage == Counter()
