"""Backend faults injected by the scripted server, and what the graph does about each."""

import asyncio
import threading
import time

import pytest
from langgraph.types import RetryPolicy

from pacore_graph import (
    BudgetExhaustedError,
    ChatOpenAICompatible,
    InvalidSettingsError,
    QuorumError,
    create_pacore_graph,
    should_retry,
    to_record,
)
from pacore_graph.checkpoints import AsyncRedisSaver
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import final_state_while_streaming, model_for, wait_for

PROBLEM = "What is 17 * 23?"
FINAL = "<think>checked</think>\\boxed{391}"
FAST = RetryPolicy(initial_interval=0.01, max_interval=0.05, max_attempts=4, retry_on=should_retry)


class Script:
    """Numbers exploration calls in arrival order and lets a test pick each reply."""

    def __init__(self, exploration, final=lambda n: Reply(content=FINAL)):
        self.exploration, self.final = exploration, final
        self.n = {"exploration": 0, "final": 0}
        self.lock = threading.Lock()

    def __call__(self, body):
        kind = "final" if "Reference" in last_user_text(body) else "exploration"
        with self.lock:
            n = self.n[kind]
            self.n[kind] += 1
        return (self.final if kind == "final" else self.exploration)(n)


def explorations(server):
    return [b for b in server.requests if "Reference" not in last_user_text(b)]


def run(server, rounds="4", policy=FAST, model=None, **context):
    graph = create_pacore_graph(model or model_for(server), rounds=rounds, retry_policy=policy)
    return asyncio.run(
        graph.compile().ainvoke({"messages": [("user", PROBLEM)]}, context=context or None)
    )


def test_5xx_burst_is_retried_and_every_trajectory_finishes(scripted):
    server = scripted(
        Script(lambda n: Reply(status=503, error="overloaded") if n < 3 else Reply(content="391"))
    )
    out = run(server)
    assert out["messages"][-1].content == "\\boxed{391}"
    assert len(explorations(server)) == 4 + 3  # each 503 asked again once
    assert to_record(out)["failed"] == 0
    assert to_record(out)["rounds"][0]["references"] == ["391"] * 4


def test_429_waits_for_retry_after(scripted):
    server = scripted(
        Script(
            lambda n: (
                Reply(status=429, error="slow down", headers={"Retry-After": "1"})
                if n == 0
                else Reply(content="391")
            )
        )
    )
    out = run(server, rounds="1")
    assert out["messages"][-1].content == "\\boxed{391}"
    first, second = server.times[0], server.times[1]
    assert second - first >= 1.0  # the server's Retry-After, not the 10 ms backoff


def test_connection_refused_fails_the_round_naming_the_cause():
    model = ChatOpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m", api_key="test-key")
    with pytest.raises(QuorumError) as info:
        run(None, rounds="2", model=model)
    message = str(info.value)
    assert message.startswith("round 1: 0 of 2 trajectories finished, 1 needed")
    assert "2× connection failed: ConnectError" in message
    assert info.value.round == 1 and info.value.finished == 0


def test_connection_reset_is_retried(scripted):
    server = scripted(Script(lambda n: Reply(fault="reset") if n == 0 else Reply(content="391")))
    out = run(server)
    assert out["messages"][-1].content == "\\boxed{391}"
    assert len(explorations(server)) == 5


def test_a_hanging_call_times_out_and_is_retried(scripted):
    server = scripted(
        Script(lambda n: Reply(content="391", delay=60) if n == 0 else Reply(content="391"))
    )
    out = run(server, model=model_for(server, timeout=0.5))
    assert out["messages"][-1].content == "\\boxed{391}"
    assert len(explorations(server)) == 5
    wait_for(lambda: server.cancelled >= 1)
    assert server.cancelled == 1  # the client hung up on the hanging call


def test_a_stream_cut_half_way_is_asked_again(scripted):
    full = "the answer is \\boxed{391} after checking"
    server = scripted(
        Script(
            lambda n: Reply(content="391"),
            final=lambda n: Reply(content=full, fault="cut" if n == 0 else None),
        )
    )
    graph = create_pacore_graph(model_for(server), rounds="2", retry_policy=FAST).compile()

    out = final_state_while_streaming(graph, {"messages": [("user", PROBLEM)]})
    assert out["messages"][-1].content == full
    assert len(server.requests) == 2 + 2  # the cut final call was asked again


def test_malformed_json_is_retried(scripted):
    server = scripted(Script(lambda n: Reply(content="391", fault="malformed" if n == 0 else None)))
    out = run(server)
    assert out["messages"][-1].content == "\\boxed{391}"
    assert len(explorations(server)) == 5


def test_context_length_400_is_not_retried_and_the_round_goes_on(scripted):
    server = scripted(
        Script(
            lambda n: (
                Reply(status=400, error="context length exceeded: 140000 > 131072")
                if n == 1
                else Reply(content=f"391 (path {n})")
            )
        )
    )
    out = run(server)
    record = to_record(out)
    assert len(explorations(server)) == 4  # the 400 was not asked again
    assert record["failed"] == 1
    (failed,) = [t for t in record["trajectories"] if t["status"] == "failed"]
    assert failed["error"] == "HTTP 400: context length exceeded: 140000 > 131072"
    assert out["pacore"]["rounds_done"][0]["failed"] == 1
    assert len(out["pacore"]["rounds_done"][0]["references"]) == 3
    final_prompt = last_user_text(server.requests[-1])
    assert "Reference 3:" in final_prompt and "Reference 4:" not in final_prompt
    assert out["messages"][-1].response_metadata["pacore"]["failed"] == 1


def test_quorum_failure_stops_then_resume_asks_only_the_failed(scripted, redis_url):
    broken = {"on": True}
    server = scripted(
        Script(
            lambda n: (
                Reply(status=500, error="GPU fell off the bus")
                if broken["on"] and n > 0
                else Reply(content=f"391 (path {n})")
            )
        )
    )
    two_tries = RetryPolicy(initial_interval=0.01, max_attempts=2, retry_on=should_retry)
    config = {"configurable": {"thread_id": "quorum-1"}}

    async def go():
        async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
            graph = create_pacore_graph(
                model_for(server), rounds="4", retry_policy=two_tries
            ).compile(checkpointer=saver)
            with pytest.raises(QuorumError) as info:
                await graph.ainvoke({"messages": [("user", PROBLEM)]}, config, durability="sync")
            asked = len(explorations(server))
            broken["on"] = False
            out = await graph.ainvoke(None, config, durability="sync")
            return info.value, asked, out

    error, asked, out = asyncio.run(go())
    assert str(error) == (
        "round 1: 1 of 4 trajectories finished, 2 needed (min_success); "
        "causes: 3× HTTP 500: GPU fell off the bus"
    )
    assert asked == 1 + 3 * 2  # one answer, three failures asked twice each
    resumed = explorations(server)[asked:]
    assert len(resumed) == 3  # the finished trajectory was not asked again
    assert out["messages"][-1].content == "\\boxed{391}"
    assert len(out["pacore"]["rounds_done"][0]["references"]) == 4
    assert to_record(out)["failed"] == 0


def test_min_success_zero_goes_on_like_the_reference(scripted):
    server = scripted(Script(lambda n: Reply(status=400, error="bad request")))

    def final_or_fail(body):
        if "Reference" in last_user_text(body) or "reference" in last_user_text(body).lower():
            return Reply(content=FINAL)
        return Reply(status=400, error="bad request")

    server.responder = final_or_fail
    out = run(server, min_success=0)
    assert out["messages"][-1].content == "\\boxed{391}"
    assert out["pacore"]["rounds_done"][0]["failed"] == 4
    assert out["pacore"]["rounds_done"][0]["references"] == []


def slow_after(quick: int, words: int = 10, k: int = 4):
    """The first ``quick`` calls answer, the others hang. The quick ones wait until all ``k``
    calls of the round have arrived, so a budget that the quick ones use up can only stop
    calls already in flight (on a busy machine a late call would otherwise be stopped
    before it is sent, and the round would show fewer requests)."""
    all_in = threading.Event()
    count = {"n": 0}
    lock = threading.Lock()

    def reply(n):
        with lock:
            count["n"] += 1
            if count["n"] == k:
                all_in.set()
        if n >= quick:
            return Reply(content=" ".join(["391"] * words), delay=60)
        all_in.wait(30)
        return Reply(content=" ".join(["391"] * words))

    return reply


@pytest.mark.parametrize("api", ["async", "sync"])
def test_max_ttc_tokens_stops_the_round_and_synthesizes_what_finished(scripted, api):
    server = scripted(Script(slow_after(quick=3)))
    graph = create_pacore_graph(model_for(server), rounds="4,4", retry_policy=FAST).compile()
    inp, context = {"messages": [("user", PROBLEM)]}, {"max_ttc_tokens": 30}
    if api == "async":
        out = asyncio.run(graph.ainvoke(inp, context=context))
    else:
        out = graph.invoke(inp, context=context)
    assert out["pacore"]["budget_exhausted"] == "max_ttc_tokens"
    assert len(explorations(server)) == 4  # round 2 never started
    assert out["pacore"]["rounds_done"][0]["stopped"] == 1
    assert len(out["pacore"]["rounds_done"][0]["references"]) == 3
    assert out["messages"][-1].content == "\\boxed{391}"
    record = to_record(out)
    assert record["budget_exhausted"] == "max_ttc_tokens" and record["stopped"] == 1
    if api == "async":  # the async API cancels the call; the sync one abandons it
        wait_for(lambda: server.cancelled >= 1)
        assert server.cancelled == 1


def test_max_seconds_cuts_slow_trajectories(scripted):
    server = scripted(Script(slow_after(quick=2)))
    started = time.monotonic()
    out = run(server, rounds="4,4", max_seconds=1.0)
    assert time.monotonic() - started >= 1.0  # the budget was not cut short
    assert out["pacore"]["budget_exhausted"] == "max_seconds"
    assert out["pacore"]["rounds_done"][0]["stopped"] == 2
    assert len(out["pacore"]["rounds_done"][0]["references"]) == 2
    stopped = [t for t in out["pacore"]["trajectories"] if t["status"] == "stopped"]
    assert {t["error"] for t in stopped} == {"budget max_seconds ran out"}
    assert out["messages"][-1].response_metadata["pacore"]["budget_exhausted"] == "max_seconds"


def test_a_budget_with_nothing_finished_is_a_clear_error(scripted):
    server = scripted(Script(slow_after(quick=0)))
    with pytest.raises(BudgetExhaustedError, match=r"max_seconds=0.5 ran out in round 1"):
        run(server, max_seconds=0.5)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("min_success", 1.5), ("min_success", -1), ("max_seconds", 0), ("max_ttc_tokens", -5)],
)
def test_impossible_settings_fail_before_any_call(scripted, setting, value):
    server = scripted()
    with pytest.raises(InvalidSettingsError, match=setting):
        run(server, **{setting: value})
    assert server.requests == []
