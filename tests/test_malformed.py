"""Malformed replies and input: a 200 that is no chat completion is retried and recorded in
one line ("malformed reply: no choices"), never a ``TypeError`` or a silent empty answer;
token counts that are no counts are unknown and never enter a budget; lone surrogates in
a reply never crash an output; a tool message without its ``tool_call_id`` is an input
error in one line. On every path: sync and async, streamed and not, SDK and direct."""

import asyncio
import itertools
import json
import os
import subprocess

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import RetryPolicy

from pacore_graph import InvalidInputError, create_pacore_graph, should_retry, to_record
from pacore_graph.errors import MalformedResponseError
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import model_for, solve_command
from tests.model_calls import call, every_way, model_of, not_streamed, streamed
from tests.test_secrets import redis_values

FAST = RetryPolicy(initial_interval=0.01, max_interval=0.05, max_attempts=3, retry_on=should_retry)


def first_message(change):
    """A transform of a completion's first choice's message."""

    def transform(completion):
        choice = completion["choices"][0]
        return {**completion, "choices": [{**choice, "message": change(choice["message"])}]}

    return transform


MALFORMED = {
    "no choices": (lambda c: {k: v for k, v in c.items() if k != "choices"}, "no choices"),
    "empty choices": (lambda c: {**c, "choices": []}, "no choices"),
    "null choices": (lambda c: {**c, "choices": None}, "no choices"),
    "a JSON list": (lambda c: [c], "a JSON array, not an object"),
    "a choice of text": (lambda c: {**c, "choices": ["391"]}, "a choice is a string"),
    "null message": (first_message(lambda m: None), "no message"),
    "number content": (first_message(lambda m: {**m, "content": 391}), "the content is a number"),
    "null content": (first_message(lambda m: {**m, "content": None}), "no content"),
    "not JSON": (lambda c: b"<html>502 Bad Gateway</html>", "not JSON"),
}


@not_streamed
@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_reply_is_one_line_naming_what_is_wrong(scripted, way, case):
    transform, what = MALFORMED[case]
    server = scripted(lambda body: Reply(content="391", transform=transform))
    with pytest.raises(MalformedResponseError) as info:
        call(model_of(server, way), way)
    assert str(info.value).startswith(f"malformed reply: {what}")
    assert "\n" not in str(info.value)


def chunk_delta(change):
    """A transform of each stream chunk's first delta (chunks without one pass)."""

    def transform(chunk):
        if not chunk.get("choices"):
            return chunk
        choice = chunk["choices"][0]
        return {**chunk, "choices": [{**choice, "delta": change(choice["delta"])}]}

    return transform


MALFORMED_CHUNKS = {
    "a JSON list": (lambda c: [c], "a stream chunk is not an object"),
    "a choice of text": (
        lambda c: {**c, "choices": ["391"]} if c.get("choices") else c,
        "a choice is a string",
    ),
    "number content": (
        chunk_delta(lambda d: {**d, "content": 391} if "content" in d else d),
        "the content is a number",
    ),
    "not JSON": (lambda c: b"{oops", "not JSON"),
}


@streamed
@pytest.mark.parametrize("case", MALFORMED_CHUNKS)
def test_a_malformed_stream_is_one_line_naming_what_is_wrong(scripted, way, case):
    transform, what = MALFORMED_CHUNKS[case]
    server = scripted(lambda body: Reply(content="391", transform=transform))
    with pytest.raises(MalformedResponseError) as info:
        call(model_for(server), way)
    assert str(info.value).startswith(f"malformed reply: {what}")


@not_streamed
def test_null_content_is_an_answer_only_beside_thinking_or_tool_calls(scripted, way):
    """vLLM sends ``content: null`` for a reply cut while it was still thinking: that is an
    answer (truncated, its thinking recorded); ``content: null`` alone is none."""
    cut = first_message(lambda m: {**m, "content": None, "reasoning_content": "hmm so"})
    server = scripted(lambda body: Reply(content="x", finish_reason="length", transform=cut))
    message = call(model_of(server, way), way)
    assert message.content == ""
    assert message.additional_kwargs["reasoning_content"] == "hmm so"
    alone = scripted(lambda body: Reply(transform=first_message(lambda m: {**m, "content": None})))
    with pytest.raises(MalformedResponseError, match=r"^malformed reply: no content$"):
        call(model_of(alone, way), way)


def run(server, rounds="2", policy=FAST, **context):
    graph = create_pacore_graph(model_for(server), rounds=rounds, retry_policy=policy)
    return asyncio.run(
        graph.compile().ainvoke(
            {"messages": [("user", "What is 17 * 23?")]}, context=context or None
        )
    )


def test_malformed_replies_are_retried_then_recorded_failed_in_one_line(scripted):
    no_choices = MALFORMED["no choices"][0]

    def responder(body):
        if "Reference" in last_user_text(body):
            return Reply(content="\\boxed{391}")
        return Reply(content="391", transform=no_choices)

    server = scripted(responder)
    out = run(server, min_success=0)
    failed = [t for t in out["pacore"]["trajectories"] if t["status"] == "failed"]
    assert [t["error"] for t in failed] == ["malformed reply: no choices"] * 2
    assert len(server.requests) == 2 * FAST.max_attempts + 1  # each asked again, then final
    assert out["messages"][-1].content == "\\boxed{391}"


BAD_USAGE = {
    "negative": lambda u: {**u, "completion_tokens": -5},
    "text": lambda u: {**u, "completion_tokens": "many"},
    "not an object": lambda u: "lots",
}


@every_way
@pytest.mark.parametrize("case", BAD_USAGE)
def test_token_counts_that_are_no_counts_are_unknown(scripted, way, case):
    bad = BAD_USAGE[case]

    def transform(completion):
        if completion.get("usage"):
            return {**completion, "usage": bad(completion["usage"])}
        return completion

    server = scripted(lambda body: Reply(content="391", transform=transform))
    message = call(model_of(server, way), way)
    assert message.content == "391"
    assert message.usage_metadata is None


def test_a_negative_token_count_never_refills_the_budget(scripted):
    """``completion_tokens: -1000`` once used to refill the budget: every round ran."""
    explorations = itertools.count()

    def responder(body):
        if "Reference" in last_user_text(body):
            return Reply(content="\\boxed{391}", completion_tokens=10)
        n = next(explorations)
        return Reply(content="391", completion_tokens=-1000 if n == 0 else 10)

    server = scripted(responder)
    graph = create_pacore_graph(model_for(server), rounds="4,4", retry_policy=FAST).compile()
    out = asyncio.run(
        graph.ainvoke(
            {"messages": [("user", "What is 17 * 23?")]},
            {"max_concurrency": 1},
            context={"max_ttc_tokens": 10},
        )
    )
    assert out["pacore"]["budget_exhausted"] == "max_ttc_tokens"
    assert len(server.requests) == 2 + 1  # unknown, then 10 tokens: the budget; then final
    counts = [
        t["completion_tokens"] for t in out["pacore"]["trajectories"] if t["status"] == "finished"
    ]
    assert counts == [None, 10, 10]
    assert to_record(out)["ttc_tokens"] == 20


SURROGATES = Reply(content="the answer \ud800 is \\boxed{391}", reasoning_content="half \udfff")


@every_way
def test_lone_surrogates_become_replacement_characters(scripted, way):
    server = scripted(lambda body: SURROGATES)
    message = call(model_of(server, way), way)
    assert message.content == "the answer \ufffd is \\boxed{391}"
    assert message.additional_kwargs["reasoning_content"].strip() == "half \ufffd"
    message.content.encode()  # what printing or storing does; a lone surrogate raised here


@pytest.mark.parametrize("output", ["answer", "json"])
def test_a_reply_with_lone_surrogates_is_printed_and_stored(scripted, redis_url, output):
    server = scripted(lambda body: SURROGATES)
    extra = ["--json"] if output == "json" else []
    result = subprocess.run(
        solve_command(server, "What is 17 * 23?", "--rounds", "2", "--redis-url", redis_url)
        + extra,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr
    answer = "the answer \ufffd is \\boxed{391}"
    if output == "json":
        record = json.loads(result.stdout)
        assert record["answer"] == answer
        assert all(t["reasoning"].strip() == "half \ufffd" for t in record["trajectories"])
    else:
        assert result.stdout.strip() == answer
    assert any("\ufffd".encode() in v for v in redis_values(redis_url))


def fake_graph(checkpointer=None):
    model = FakeListChatModel(responses=["\\boxed{4}"] * 4)
    return create_pacore_graph(model, rounds="1").compile(checkpointer=checkpointer)


TOOL_WITHOUT_ID = [{"role": "user", "content": "2+2?"}, {"role": "tool", "content": "4"}]


def test_a_tool_message_without_its_tool_call_id_is_one_line():
    with pytest.raises(InvalidInputError) as info:
        fake_graph().invoke({"messages": [{"role": "tool", "content": "x"}]})
    assert str(info.value) == (
        "bad messages in the input: a tool message needs a tool_call_id, the id of the "
        "tool call it answers"
    )


def test_bad_messages_are_one_line_on_a_thread_too():
    """The thread runner reads the problem before the graph does: same error, same line."""
    from pacore_graph.threads import arun_thread

    graph = fake_graph(InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(InvalidInputError, match="needs a tool_call_id"):
        asyncio.run(arun_thread(graph, {"messages": TOOL_WITHOUT_ID}, config))
    bad_calls = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "", "tool_calls": "add(2, 2)"},
    ]
    with pytest.raises(InvalidInputError, match=r"^bad messages in the input: a message has"):
        graph.invoke({"messages": bad_calls}, config)
