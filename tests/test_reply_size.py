"""A reply past ``max_reply_bytes`` is stopped while it is read, never retried, and recorded
as a failed trajectory in one line ("reply too large: over 64 KiB (max_reply_bytes)"): one
50 MB reply once took 4.6 GB. On every path: sync and async, streamed and not, SDK and
direct, with and without a ``Content-Length``."""

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
from langgraph.types import RetryPolicy

from pacore_graph import create_pacore_graph, should_retry
from pacore_graph.errors import ReplyTooLargeError
from pacore_graph.retry import describe_failure
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import model_for
from tests.model_calls import NOT_STREAMED, call, every_way, model_of
from tests.raw_http import RawServer

FAST = RetryPolicy(initial_interval=0.01, max_interval=0.05, max_attempts=3, retry_on=should_retry)
LIMIT = 64 * 1024
MESSAGE = "reply too large: over 64 KiB (max_reply_bytes)"
WORD = "a" * 999 + " "  # 1 kB: a stream sends a chunk a word
BIG = WORD * 2000  # 2 MB


@every_way
def test_a_reply_past_the_limit_raises_in_one_line(scripted, way):
    server = scripted(lambda body: Reply(content=BIG))
    with pytest.raises(ReplyTooLargeError) as info:
        call(model_of(server, way, max_reply_bytes=LIMIT), way)
    assert str(info.value) == MESSAGE
    assert describe_failure(info.value) == MESSAGE
    assert not should_retry(info.value)


@every_way
def test_thinking_counts_and_a_reply_under_the_limit_passes(scripted, way):
    small = WORD * 20  # 20 kB
    server = scripted(lambda body: Reply(content=small, reasoning_content=small))
    assert call(model_of(server, way, max_reply_bytes=LIMIT), way).content.strip()
    with pytest.raises(ReplyTooLargeError):
        call(model_of(server, way, max_reply_bytes=30_000), way)
    over = WORD * 70  # 70 kB
    unlimited = scripted(lambda body: Reply(content=over))
    assert len(call(model_of(unlimited, way, max_reply_bytes=None), way).content) >= len(over) - 1


def test_the_default_limit_is_8_mib(scripted):
    model = model_for(scripted())
    assert model.max_reply_bytes == 8 * 1024 * 1024
    assert str(ReplyTooLargeError(model.max_reply_bytes)) == (
        "reply too large: over 8 MiB (max_reply_bytes)"
    )


class UnsizedServer(RawServer):
    """Answers every request with a 200 completion of ``size`` bytes of content, sent without
    a ``Content-Length`` (the body ends when the connection closes): only counting the body
    as it is read can stop it."""

    def __init__(self, size: int) -> None:
        completion = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "a" * size},
                    "finish_reason": "stop",
                }
            ],
        }
        self.body = json.dumps(completion).encode()
        super().__init__()

    def pieces(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), 16384):
            yield self.body[start : start + 16384]


@pytest.mark.parametrize("way", NOT_STREAMED)
def test_a_body_without_content_length_is_stopped_while_read(way):
    server = UnsizedServer(32 * 1024 * 1024)
    try:
        model = model_for(server, direct_http=way != "ainvoke-sdk", max_reply_bytes=LIMIT)  # type: ignore[arg-type]
        with pytest.raises(ReplyTooLargeError, match=f"^{re.escape(MESSAGE)}$"):
            call(model, way)
    finally:
        server.stop()


def run(server, way):
    """A K=2 round with one reply past the limit, then the synthesis; the final state."""
    model = model_for(
        server,
        max_reply_bytes=LIMIT,
        streaming=way == "stream",
        direct_http=way != "sdk",
    )
    graph = create_pacore_graph(model, rounds="2", retry_policy=FAST).compile()
    input = {"messages": [("user", "What is 17 * 23?")]}
    if way == "sync":
        return graph.invoke(input, {"max_concurrency": 1}, context={"min_success": 0})
    return asyncio.run(graph.ainvoke(input, {"max_concurrency": 1}, context={"min_success": 0}))


@pytest.mark.parametrize("way", ["direct", "sdk", "sync", "stream"])
def test_a_reply_too_large_is_a_failed_trajectory_not_retried(scripted, way):
    calls = []

    def responder(body):
        if "Reference" in last_user_text(body):
            return Reply(content="\\boxed{391}")
        calls.append(1)
        return Reply(content=BIG if len(calls) == 1 else "17 * 23 = \\boxed{391}")

    server = scripted(responder)
    out = run(server, way)
    statuses = sorted((t["status"], t.get("error")) for t in out["pacore"]["trajectories"])
    assert statuses[0] == ("failed", MESSAGE)
    assert [s for s, _ in statuses[1:]] == ["finished", "finished"]  # the other, the synthesis
    assert len(server.requests) == 3  # not asked again
    assert out["messages"][-1].content == "\\boxed{391}"
