"""The graph against a scripted OpenAI-compatible server: faithful behaviour, record, streaming."""

import asyncio
import json
import re
import threading
import uuid

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph import (
    ContextLimitError,
    InvalidInputError,
    InvalidRoundsError,
    create_pacore_graph,
    order_references,
    reference_compaction,
    render_synthesis_prompt,
    to_record,
    to_results_row,
)
from pacore_graph.testing import Reply, last_user_text
from pacore_graph.trajectories import reference_text
from tests.conftest import Gate, model_for

PROBLEM = "What is 17 * 23?"


def by_round(server, vector):
    """The server's request bodies split by round, using the round vector's sizes."""
    out, i = [], 0
    for k in vector:
        out.append(server.requests[i : i + k])
        i += k
    assert i == len(server.requests)
    return out


def numbered(prefix="r"):
    """A responder whose n-th reply says which call it was, with some inline thinking."""
    lock, count = threading.Lock(), [0]

    def respond(body):
        with lock:
            n = count[0]
            count[0] += 1
        return Reply(
            content=f"<think>scratch {n}</think>{prefix}{n} " + "x " * n,
            completion_tokens=10 + n,
            prompt_tokens=100 + len(last_user_text(body)),
        )

    return respond


def test_rounds_send_faithful_prompts(scripted):
    server = scripted(numbered())
    graph = create_pacore_graph(model_for(server), rounds=[3, 2]).compile()
    msgs = [SystemMessage("You are careful."), HumanMessage("warm-up"), AIMessage("ok")]
    out = graph.invoke({"messages": [*msgs, HumanMessage(PROBLEM)]})

    rounds = by_round(server, [3, 2, 1])
    # Round 1: the caller's messages exactly.
    for body in rounds[0]:
        assert body["messages"] == [
            {"role": "system", "content": "You are careful."},
            {"role": "user", "content": "warm-up"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": PROBLEM},
        ]
        assert body["temperature"] == 1.0 and body["top_p"] == 1.0
        assert "max_tokens" not in body
    # Round 2 and 3: same turns, last user message replaced by P(x, M) in the reference order.
    trajectories = out["pacore"]["trajectories"]
    for r in (2, 3):
        previous = sorted(
            (t for t in trajectories if t["round"] == r - 1), key=lambda t: t["index"]
        )
        ordered = order_references(previous, lambda t: t["content"], 42)
        expected = render_synthesis_prompt(
            PROBLEM, [reference_compaction(t["content"]) for t in ordered]
        )
        prompts = [body["messages"] for body in rounds[r - 1]]
        assert all(p == prompts[0] for p in prompts)  # byte-identical within a round
        assert prompts[0][:3] == rounds[0][0]["messages"][:3]
        assert prompts[0][3] == {"role": "user", "content": expected}
        assert "scratch" not in expected  # thinking never reaches later rounds
    assert len(server.connections) < len(server.requests)  # pooled keep-alive connections
    answer = out["messages"][-1]
    assert isinstance(answer, AIMessage)
    assert answer.content == "r5" + " x" * 5
    assert answer.additional_kwargs["reasoning_content"] == "scratch 5"
    assert answer.usage_metadata["output_tokens"] == sum(10 + n for n in range(6))
    assert answer.usage_metadata["input_tokens"] == max(t["prompt_tokens"] for t in trajectories)


def test_separated_reasoning_is_recorded_but_never_referenced(scripted):
    server = scripted(
        lambda body: Reply(content="Answer: 391", reasoning_content="17*23 = 340 + 51")
    )
    out = (
        create_pacore_graph(model_for(server), rounds=2)
        .compile()
        .invoke({"messages": [("user", PROBLEM)]})
    )
    t = out["pacore"]["trajectories"][0]
    assert t["reasoning"] == "17*23 = 340 + 51"
    assert t["message"] is None and reference_text(t) == "Answer: 391"  # the content itself
    assert "340" not in server.requests[2]["messages"][-1]["content"]
    assert out["messages"][-1].additional_kwargs["reasoning_content"] == "17*23 = 340 + 51"


def test_empty_contents_are_dropped(scripted):
    replies = iter(["", "<think>only thinking</think>", "kept one", "final"])
    lock = threading.Lock()

    def respond(body):
        with lock:
            return next(replies)

    server = scripted(respond)
    out = (
        create_pacore_graph(model_for(server), rounds=3)
        .compile()
        .invoke({"messages": [("user", PROBLEM)]}, config={"max_concurrency": 1})
    )
    assert out["pacore"]["rounds_done"][0]["references"] == [2]  # by trajectory index
    assert to_record(out)["rounds"][0]["references"] == ["kept one"]
    assert out["pacore"]["rounds_done"][0]["dropped_empty"] == 2
    assert server.requests[3]["messages"][-1]["content"] == render_synthesis_prompt(
        PROBLEM, ["kept one"]
    )


@pytest.mark.parametrize("policy", ["template", "problem"])
def test_all_failed_round_policies(scripted, policy):
    server = scripted(lambda body: "" if "Reference" not in last_user_text(body) else "final")
    server_final = []

    graph = create_pacore_graph(model_for(server), rounds=2).compile()
    graph.invoke({"messages": [("user", PROBLEM)]}, context={"empty_references": policy})
    server_final.append(server.requests[-1]["messages"][-1]["content"])
    if policy == "template":  # the reference code: P(x, [])
        assert server_final[0] == render_synthesis_prompt(PROBLEM, [])
    else:  # the paper: the plain problem
        assert server_final[0] == PROBLEM


def test_sampling_settings_override_per_run(scripted):
    server = scripted(numbered())
    graph = create_pacore_graph(
        model_for(server, extra_body={"top_k": 20}), rounds=1, temperature=0.6
    ).compile()
    graph.invoke({"messages": [("user", PROBLEM)]})
    assert server.requests[0]["temperature"] == 0.6
    assert server.requests[0]["top_k"] == 20
    graph.invoke(
        {"messages": [("user", PROBLEM)]},
        context={
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 64,
            "extra_body": {"chat_template_kwargs": {"enable_thinking": True}},
            "rounds": 2,
        },
    )
    later = server.requests[2:]
    assert len(later) == 3  # the per-run round vector [2, 1]
    for body in later:
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 64)
        assert body["chat_template_kwargs"] == {"enable_thinking": True}
        assert body["top_k"] == 20


def test_seed_changes_the_reference_order(scripted):
    def run(seed):
        server = scripted(numbered())
        graph = create_pacore_graph(model_for(server), rounds=6).compile()
        out = graph.invoke(
            {"messages": [("user", PROBLEM)]},
            context={"seed": seed},
            config={"max_concurrency": 1},
        )
        return to_record(out)["rounds"][0]["references"]

    assert run(42) == run(42)
    assert run(42) != run(3)


def test_truncated_trajectories_are_flagged_and_optionally_dropped(scripted):
    lock, count = threading.Lock(), [0]

    def respond(body):
        with lock:
            count[0] += 1
            n = count[0]
        return Reply(content=f"partial {n}", finish_reason="length" if n == 1 else "stop")

    server = scripted(respond)
    graph = create_pacore_graph(model_for(server), rounds=3).compile()
    cfg = {"max_concurrency": 1}
    out = graph.invoke({"messages": [("user", PROBLEM)]}, config=cfg)
    assert [t["truncated"] for t in out["pacore"]["trajectories"]] == [True, False, False, False]
    assert len(out["pacore"]["rounds_done"][0]["references"]) == 3

    count[0] = 0
    out = graph.invoke(
        {"messages": [("user", PROBLEM)]}, context={"drop_truncated": True}, config=cfg
    )
    assert "partial 1" not in to_record(out)["rounds"][0]["references"]
    assert out["pacore"]["rounds_done"][0]["dropped_truncated"] == 1


def test_context_limit_errors_or_drops_the_longest(scripted):
    lengths = iter([10, 400, 20])
    lock = threading.Lock()

    def explore(body):
        if "Reference" in last_user_text(body):
            return "final"
        with lock:
            return "y " * next(lengths)

    server = scripted(explore)
    graph = create_pacore_graph(model_for(server), rounds=3).compile()
    with pytest.raises(ContextLimitError, match="round 2 synthesis prompt"):
        graph.invoke(
            {"messages": [("user", PROBLEM)]},
            context={"context_limit": 300},
            config={"max_concurrency": 1},
        )
    assert len(server.requests) == 3  # stopped before the synthesis call

    lengths = iter([10, 400, 20])
    out = graph.invoke(
        {"messages": [("user", PROBLEM)]},
        context={"context_limit": 300, "on_context_overflow": "drop_longest"},
        config={"max_concurrency": 1},
    )
    assert out["pacore"]["rounds_done"][0]["dropped_for_context"] == 1
    prompt = server.requests[-1]["messages"][-1]["content"]
    assert len(re.findall(r"^Reference \d+:$", prompt, re.M)) == 2 and len(prompt) < 900


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "no messages"),
        ([("system", "only a system prompt")], "no user message"),
        ([("user", "   ")], "empty"),
    ],
)
def test_bad_input_fails_before_any_call(scripted, messages, fragment):
    server = scripted()
    graph = create_pacore_graph(model_for(server)).compile()
    with pytest.raises(InvalidInputError, match=fragment):
        graph.invoke({"messages": messages})
    assert server.requests == []


def test_bad_rounds_fail_at_build_and_per_run(scripted):
    server = scripted()
    with pytest.raises(InvalidRoundsError):
        create_pacore_graph(model_for(server), rounds=[0])
    graph = create_pacore_graph(model_for(server)).compile()
    with pytest.raises(InvalidRoundsError, match="unknown rounds"):
        graph.invoke({"messages": [("user", PROBLEM)]}, context={"rounds": "ultra"})
    with pytest.raises(TypeError, match="unknown PaCoRe setting"):
        create_pacore_graph(model_for(server), temprature=0.5)
    assert server.requests == []


def test_record_converts_to_reference_results_row(scripted):
    server = scripted(lambda body: Reply(content="<think>t</think>ans", reasoning_content=None))
    out = (
        create_pacore_graph(model_for(server), rounds=[2])
        .compile()
        .invoke({"messages": [("user", PROBLEM)]})
    )
    row = to_results_row(out, request_id="p1")
    assert set(row) == {
        "request_id",
        "final_response",
        "final_reasoning_content",
        "round_responses",
    }
    assert row["request_id"] == "p1"
    assert [len(r) for r in row["round_responses"]] == [2, 1]
    assert row["final_response"] == "<think>t</think>ans"
    assert row["round_responses"][0][0] == {
        "content": "<think>t</think>ans",
        "reasoning_content": None,
    }
    record = to_record(out, "p1")
    assert record["answer"] == "ans"
    assert record["ttc_tokens"] == sum(
        t["completion_tokens"] for t in out["pacore"]["trajectories"]
    )
    for t in out["pacore"]["trajectories"]:
        assert t["latency_s"] >= 0 and t["finish_reason"] == "stop" and t["prompt_tokens"] > 0


async def test_async_run_streams_progress_events_and_final_tokens(scripted):
    server = scripted(
        lambda body: Reply(content="The answer is 391", reasoning_content="think hard")
    )
    model = model_for(server)
    graph = create_pacore_graph(model, rounds=[2]).compile()
    custom, tokens = [], []
    async for mode, chunk in graph.astream(
        {"messages": [("user", PROBLEM)]}, stream_mode=["custom", "messages"]
    ):
        if mode == "custom":
            custom.append(chunk)
        else:
            message, meta = chunk
            if meta.get("langgraph_node") == "trajectory":
                tokens.append((meta["pacore_round"], message.content))
    kinds = [e["type"] for e in custom]
    assert kinds[0] == "round_started" and kinds[-1] == "answer"
    assert kinds.count("trajectory_finished") == 3
    assert kinds.count("round_started") == kinds.count("round_finished") == 2
    assert custom[-1]["content"] == "The answer is 391"
    # Only the final round streams its tokens, word by word.
    assert {r for r, _ in tokens} == {2}
    assert "".join(text for _, text in tokens) == "The answer is 391"
    assert len([t for _, t in tokens if t]) > 1
    assert model.async_clients == 1  # one pooled client served all calls of this loop


def test_max_concurrency_bounds_calls_in_flight(scripted):
    gate = Gate(lambda body: Reply(content="ok"))
    server = scripted(gate)
    gate.open_when(lambda: server.in_flight >= 3)
    graph = create_pacore_graph(model_for(server), rounds=8).compile()
    asyncio.run(graph.ainvoke({"messages": [("user", PROBLEM)]}, config={"max_concurrency": 3}))
    assert server.max_in_flight == 3


def test_retry_on_5xx_but_not_on_400(scripted):
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(body):
        with lock:
            calls["n"] += 1
            n = calls["n"]
        return Reply(status=503, error="overloaded") if n == 1 else Reply(content="fine")

    server = scripted(flaky)
    from langgraph.types import RetryPolicy

    from pacore_graph import should_retry

    fast = RetryPolicy(initial_interval=0.01, max_attempts=3, retry_on=should_retry)
    out = (
        create_pacore_graph(model_for(server), rounds=1, retry_policy=fast)
        .compile()
        .invoke({"messages": [("user", PROBLEM)]})
    )
    assert out["messages"][-1].content == "fine"
    assert len(server.requests) == 3  # one retried failure, then two calls

    bad = scripted(lambda body: Reply(status=400, error="context length exceeded"))
    from pacore_graph import QuorumError

    with pytest.raises(QuorumError, match=r"round 1: 0 of 1 .*HTTP 400: context length exceeded"):
        create_pacore_graph(model_for(bad), rounds=1, retry_policy=fast).compile().invoke(
            {"messages": [("user", PROBLEM)]}
        )
    assert len(bad.requests) == 1  # a 400 is not retried


def test_state_and_final_values_hold_each_trajectory_text_once_each():
    replies = [f"reply {uuid.uuid4().hex} " + "y" * 4096 for _ in range(5)]
    graph = create_pacore_graph(FakeListChatModel(responses=replies), rounds=[4])
    compiled = graph.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "sizes"}}
    *_, values = compiled.stream({"messages": [("user", PROBLEM)]}, config, stream_mode="values")
    state, text = compiled.get_state(config).values, sum(map(len, replies))
    # The state: each reply once, in `trajectories`, the final one also as the answer. The
    # final values event: the `pacore` record besides. No `message` copy, no copy in
    # `rounds_done`, none in `references` once the final round was sent them.
    counts = [json.dumps(state, default=str).count(r.split()[1]) for r in replies]
    assert counts == [1, 1, 1, 1, 2]
    counts = [json.dumps(values, default=str).count(r.split()[1]) for r in replies]
    assert counts == [2, 2, 2, 2, 3]
    assert len(json.dumps(state, default=str)) < text + 4096 + 4000
    assert len(json.dumps(values, default=str)) < 2 * text + 4096 + 8000
