"""Every model call ends: ``timeout`` / ``--timeout`` is a deadline for the whole call, first
byte to last, on every path; a stream that sends nothing fails at its stall limit sooner.

A per-read timeout never trips on a server that trickles a byte at a time, or on a
stream that sends keep-alives forever: each test below hung (or ran to the server's end)
before the deadline existed.
"""

import asyncio
import itertools
import threading

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import RetryPolicy

from pacore_graph import ChatOpenAICompatible, QuorumError, create_pacore_graph, should_retry
from pacore_graph.backends.launch import open_backend
from pacore_graph.errors import CallTimeoutError
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import model_for, run_in_process, solve_command, wait_for
from tests.model_calls import call, model_of, not_streamed, streamed

# Nothing here takes more than a few seconds now; before, these hung.
pytestmark = pytest.mark.timeout(60)

DEADLINE = 1.0
TRICKLE = Reply(content="a reply that a server sends one byte at a time " * 20, trickle=0.05)
"""About 50 s of bytes, none 50 ms after another: no read ever waits a whole second."""


def hung_up(server) -> None:
    """Waits until the server saw the client hang up on its answer."""
    wait_for(lambda: server.cancelled >= 1)


@not_streamed
def test_a_reply_trickled_byte_by_byte_ends_at_the_deadline(scripted, way):
    server = scripted(lambda body: TRICKLE)
    model = model_of(server, way, timeout=DEADLINE)
    with pytest.raises(CallTimeoutError, match=r"^call exceeded its 1 s deadline$"):
        call(model, way)
    hung_up(server)


@streamed
@pytest.mark.parametrize("endless", ["empty_delta", "comment"])
def test_a_stream_that_never_ends_ends_at_the_deadline(scripted, way, endless):
    server = scripted(lambda body: Reply(content="thinking", endless=endless, trickle=0.05))
    model = model_for(server, timeout=DEADLINE)
    with pytest.raises(CallTimeoutError, match=r"^call exceeded its 1 s deadline$"):
        call(model, way)
    hung_up(server)


@streamed
def test_a_stream_that_sends_nothing_fails_at_its_stall_limit(scripted, way):
    server = scripted(lambda body: Reply(content="late", delay=30))
    model = model_for(server, timeout=20, stream_chunk_timeout=0.5)
    with pytest.raises(CallTimeoutError, match=r"^the stream stalled: nothing for 0\.5 s$"):
        call(model, way)
    hung_up(server)


@streamed
def test_async_keep_alives_are_no_chunks(scripted, way):
    """Keep-alive comments are bytes (a sync read sees them) but no chunks: an async stream
    of nothing else stalls; a sync one runs to its deadline."""
    server = scripted(lambda body: Reply(content="thinking", endless="comment", trickle=0.1))
    model = model_for(server, timeout=1.5, stream_chunk_timeout=0.5)
    expected = r"stalled: nothing for 0\.5 s" if way == "astream" else "deadline"
    with pytest.raises(CallTimeoutError, match=expected):
        call(model, way)


def test_the_defaults_bound_every_call_yet_fit_a_long_reasoning_call(scripted):
    model = ChatOpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m")
    assert model.request_timeout == 7200  # a 131k-token call at 30 tok/s takes 73 min
    assert model.stream_chunk_timeout == 600
    # The CLI without --timeout: the default deadline, where it was no limit at all.
    server = scripted(lambda body: "ok")
    with open_backend("openai", server.base_url, server.model, None, None) as backend:
        assert backend.model.request_timeout == 7200
    with open_backend("openai", server.base_url, server.model, None, 3) as backend:
        assert backend.model.request_timeout == 3
    # A non-streamed answer takes as long as it takes within its deadline: the stall
    # limit is for streams (the server sends nothing until it has the whole answer).
    slow = scripted(lambda body: Reply(content="done", delay=1.0))
    for way in ("invoke", "ainvoke-direct", "ainvoke-sdk"):
        assert call(model_of(slow, way, timeout=5, stream_chunk_timeout=0.3), way).content == (
            "done"
        )


def test_a_call_past_its_deadline_is_retried_then_recorded_with_its_cause(scripted):
    def responder(body):
        if "Reference" in last_user_text(body):
            return Reply(content="\\boxed{391}")
        return TRICKLE

    server = scripted(responder)
    policy = RetryPolicy(initial_interval=0.01, max_attempts=2, retry_on=should_retry)
    graph = create_pacore_graph(
        model_for(server, timeout=0.5), rounds="2", retry_policy=policy
    ).compile()
    with pytest.raises(QuorumError) as info:
        asyncio.run(graph.ainvoke({"messages": [("user", "17 * 23?")]}))
    assert "2× call exceeded its 0.5 s deadline" in str(info.value)
    assert len(server.requests) == 2 * 2  # each trajectory asked twice


def test_the_cli_timeout_ends_a_trickling_call_and_retries_it(scripted):
    explorations = itertools.count()

    def responder(body):
        if "Reference" in last_user_text(body):
            return Reply(content="<think>ok</think>\\boxed{391}")
        return TRICKLE if next(explorations) == 0 else Reply(content="391")

    server = scripted(responder)
    result = run_in_process(
        solve_command(server, "What is 17 * 23?", "--rounds", "2", "--timeout", "1")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "\\boxed{391}"
    assert len(server.requests) == 2 + 1 + 1  # the trickling call was asked again
    hung_up(server)


@pytest.mark.parametrize("how", ["replay", "fork"])
def test_a_replay_or_fork_of_a_round_gets_max_seconds_from_its_own_start(scripted, how):
    """A replay (or fork) of round 1's checkpoint is a new attempt: its clock starts when it
    does, not when the original run did (which would stop round 2 without a call)."""
    holding, release, held = threading.Event(), threading.Event(), itertools.count()
    holding.set()

    def respond(body):
        text = last_user_text(body)
        if "Reference 1:" in text and "17" in text and holding.is_set() and next(held) < 2:
            release.wait(30)  # round 2 of the first run: held until its budget stops it
        return Reply(content="<think>t</think>\\boxed{391}")

    server = scripted(respond)
    graph = create_pacore_graph(model_for(server), rounds="2,2").compile(
        checkpointer=InMemorySaver()
    )
    config: RunnableConfig = {"configurable": {"thread_id": how}}
    context = {"max_seconds": 1.0}
    graph.invoke({"messages": [("user", "warm-up")]}, {"configurable": {"thread_id": "warm"}})
    try:
        first = graph.invoke({"messages": [("user", "17 * 23?")]}, config, context=context)
        assert first["pacore"]["budget_exhausted"] == "max_seconds"  # round 2 was stopped
        [after_round_1] = [
            s
            for s in graph.get_state_history(config)
            if s.next == ("synthesize",) and s.values["round"] == 1
        ]
        holding.clear()  # the new attempt's round 2 is answered at once
        calls = len(server.requests)
        start = after_round_1.config
        if how == "fork":
            start = graph.update_state(start, {"references": ["391", "392"]})
        again = graph.invoke(None, start, context=context)
    finally:
        release.set()
    round_2 = [t for t in again["pacore"]["trajectories"] if t["round"] == 2]
    assert [t["status"] for t in round_2] == ["finished", "finished"]
    assert again["pacore"]["budget_exhausted"] is None
    assert len(server.requests) == calls + 2 + 1  # round 2 and the final synthesis


def test_each_pacore_run_in_one_parent_run_gets_max_seconds_of_its_own(scripted):
    """Two PaCoRe runs in one run of a parent graph share its attempt, not a clock: the
    second starts with its whole budget after the first used all of its own."""
    release, held = threading.Event(), itertools.count()

    def respond(body):
        text = last_user_text(body)
        if "Reference 1:" in text and "first" in text and next(held) < 2:
            release.wait(30)  # the first run's round 2: held until its budget stops it
        return Reply(content="<think>t</think>\\boxed{391}")

    pacore = create_pacore_graph(model_for(scripted(respond)), rounds="2,2", max_seconds=1.0)
    compiled = pacore.compile()
    parent = StateGraph(MessagesState)
    parent.add_node("first", compiled)
    second = {"messages": [("user", "second")]}
    parent.add_node("second", lambda state: {"messages": compiled.invoke(second)["messages"]})
    parent.add_edge(START, "first")
    parent.add_edge("first", "second")
    compiled.invoke({"messages": [("user", "warm-up")]})
    try:
        out = parent.compile().invoke({"messages": [("user", "first")]})
    finally:
        release.set()
    assert [m.content for m in out["messages"]][-1] == "\\boxed{391}"


class _Hangs:
    """A chat model whose call never returns until the test ends."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def invoke(self, *args, **kwargs):
        self.release.wait(30)

    async def ainvoke(self, *args, **kwargs):
        await asyncio.sleep(30)  # cancelled when the round stops


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_wait_that_wakes_a_moment_before_the_deadline_records_max_seconds(mode, monkeypatch):
    # A timed wait may end a hair before the wall clock reaches the deadline; the round
    # was still stopped by max_seconds, which the record and compact must name.
    from pacore_graph.budget import BudgetTracker, RoundBudget
    from pacore_graph.nodes import trajectory

    tracker = BudgetTracker(RoundBudget(key="r", deadline=None, tokens_left=None))
    monkeypatch.setattr(tracker, "seconds_left", lambda: 0.01)  # never quite reached
    model = _Hangs()
    call = trajectory.ModelCall(None, None, 0.0, None, [], {}, {}, tracker, None)
    try:
        if mode == "sync":
            returned, _ = trajectory._call_in_thread(model, call)
        else:
            returned, _ = asyncio.run(trajectory._call_async(model, call))
    finally:
        model.release.set()
    assert not returned
    assert tracker.reason == "max_seconds" and tracker.error == "budget max_seconds ran out"
