"""What ``stream_mode="messages"`` shows and what a tracer sees.

The final round's reply streams once, thinking split out into ``reasoning_content``, under
the id of the final ``AIMessage`` (so LangGraph does not send that message again); the
exploration rounds do not stream. Every model call's run is named for its round and index.
"""

import asyncio
import io
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

from pacore_graph import create_pacore_graph
from pacore_graph.testing import Reply, ScriptedServer
from pacore_graph.trajectories import ThinkingSplitter, split_thinking
from tests.conftest import model_for, pacore_in_process
from tests.serve_helpers import is_synthesis, question, serving

PROBLEM = "What is 17 * 23?"
THINKING = "17 * 20 = 340,\n340 + 51 = 391."
ANSWER = "The answer is **391**."
INLINE = f"<think>\n{THINKING}\n</think>\n\n{ANSWER}"
"""A reply with inline thinking: a tag, newlines around it, a blank line after it."""


def fake_list(reply: str) -> BaseChatModel:
    """Streams ``reply`` one character per chunk: every tag is split across chunks."""
    return FakeListChatModel(responses=[reply])


def fake_generic(reply: str) -> BaseChatModel:
    """Streams ``reply`` split on whitespace (a tag shares its chunk with a word)."""
    return GenericFakeChatModel(messages=iter([AIMessage(reply) for _ in range(10)]))


FAKES = pytest.mark.parametrize("make_model", [fake_list, fake_generic], ids=["chars", "words"])


def run_streaming(
    graph: Any, api: str, seen: Callable[[BaseMessage], object] | None = None
) -> tuple[list[tuple[BaseMessage, dict]], dict]:
    """``stream``/``astream`` with ``messages`` and ``values``: the messages stream, the output;
    ``seen`` gets each message chunk as it arrives."""
    args: Any = {"input": {"messages": [("user", PROBLEM)]}, "stream_mode": ["messages", "values"]}

    def each(part: tuple[str, Any]) -> tuple[str, Any]:
        if part[0] == "messages" and seen is not None:
            seen(part[1][0])
        return part

    async def collect() -> list[tuple[str, Any]]:
        return [each(part) async for part in graph.astream(**args)]

    parts = (
        [each(part) for part in graph.stream(**args)] if api == "stream" else asyncio.run(collect())
    )
    messages = [chunk for mode, chunk in parts if mode == "messages"]
    output = [chunk for mode, chunk in parts if mode == "values"][-1]
    return messages, output


def reasoning(message: BaseMessage) -> str:
    return message.additional_kwargs.get("reasoning_content") or ""


def assert_streamed_once(
    streamed: list[tuple[BaseMessage, dict]], output: dict, answer: str, thinking: str | None
) -> None:
    """The final round's reply streamed once, split, under the final message's id."""
    final = output["messages"][-1]
    assert isinstance(final, AIMessage)
    assert (final.content, final.additional_kwargs.get("reasoning_content")) == (answer, thinking)
    assert streamed, "the final round streamed nothing"
    # One message: the final round's, under the final message's id (no second copy).
    assert {message.id for message, _ in streamed} == {final.id}
    assert all(isinstance(message, AIMessageChunk) for message, _ in streamed)
    # Only the final round streams; its chunks say so.
    rounds = len(output["pacore"]["round_vector"])
    assert {(meta["langgraph_node"], meta["pacore_round"]) for _, meta in streamed} == {
        ("trajectory", rounds)
    }
    # No empty chunks; thinking is reasoning, never content; no tag is streamed.
    assert all(message.content or reasoning(message) for message, _ in streamed)
    for message, _ in streamed:
        assert "think>" not in message.content and "think>" not in reasoning(message)
    assert "".join(message.content for message, _ in streamed) == final.content
    assert "".join(reasoning(message) for message, _ in streamed) == (thinking or "")
    # Adding the chunks up, as a chat client does, gives the final message.
    whole = streamed[0][0]
    for message, _ in streamed[1:]:
        whole = whole + message
    assert (whole.id, whole.content, reasoning(whole)) == (final.id, answer, thinking or "")
    # The record says which message id the final trajectory streamed under.
    record = output["pacore"]["trajectories"]
    assert [t["message_id"] for t in record if t["round"] == rounds] == [final.id]


@FAKES
@pytest.mark.parametrize("api", ["stream", "astream"])
def test_final_round_streams_once_with_thinking_split_out(make_model, api):
    graph = create_pacore_graph(make_model(INLINE), rounds=[3, 2]).compile()
    streamed, output = run_streaming(graph, api)
    assert_streamed_once(streamed, output, ANSWER, THINKING)
    # More than one chunk of each: the reply streams, it is not sent whole at the end.
    assert sum(1 for m, _ in streamed if m.content) > 1
    assert sum(1 for m, _ in streamed if reasoning(m)) > 1


@FAKES
@pytest.mark.parametrize(
    ("reply", "answer", "thinking"),
    [
        # A chat template that opens the thinking in the prompt: only the closing tag.
        (f"{THINKING}</think>\n{ANSWER}", ANSWER, THINKING),
        # No thinking at all.
        (f"  {ANSWER}\n", ANSWER, None),
        # Looks like a tag, is not one.
        ("<thinking aloud> is fine", "<thinking aloud> is fine", None),
    ],
    ids=["closing-tag-only", "no-thinking", "not-a-tag"],
)
def test_final_message_is_what_streamed(make_model, reply, answer, thinking):
    graph = create_pacore_graph(make_model(reply), rounds=[2]).compile()
    streamed, output = run_streaming(graph, "stream")
    assert_streamed_once(streamed, output, answer, thinking)


@pytest.mark.parametrize("api", ["stream", "astream"])
@pytest.mark.parametrize(
    ("reply", "answer", "thinking"),
    [
        # The server separates the thinking (vLLM's --reasoning-parser): it streams as is.
        (Reply(content=f"\n\n{ANSWER}", reasoning_content=THINKING), ANSWER, THINKING + " "),
        # The scripted server streams word by word, so a tag shares a chunk with a word.
        (Reply(content=INLINE.replace("\n", " ")), ANSWER, THINKING.replace("\n", " ")),
    ],
    ids=["separated", "inline"],
)
def test_openai_compatible_final_round_streams_once(scripted, api, reply, answer, thinking):
    server = scripted(lambda body: reply)
    graph = create_pacore_graph(model_for(server), rounds=[2]).compile()
    streamed, output = run_streaming(graph, api)
    assert_streamed_once(streamed, output, answer, thinking)
    assert sum(1 for m, _ in streamed if m.content) > 1


class LastWordHeld:
    """Explorations answer without thinking; the synthesis streams ``answer`` word by word,
    its last word held until `release` is set (by a client that saw the first ones) or 10 s
    pass. `released` says which: True per held word that the client let go."""

    def __init__(self, answer: str = "It is 391 after all.") -> None:
        self.answer, self.last = answer, answer.split(" ")[-1]
        self.release = threading.Event()
        self.released: list[bool] = []

    def __call__(self, body: dict) -> Reply:
        if is_synthesis(body):
            return Reply(content=self.answer, transform=self._hold)
        return Reply(content="It is 391.")

    def _hold(self, chunk: dict) -> dict:
        if any(c["delta"].get("content") == self.last for c in chunk.get("choices", [])):
            self.released.append(self.release.wait(10))
        return chunk


@pytest.mark.parametrize("api", ["stream", "astream"])
def test_an_answer_without_thinking_streams_token_by_token(scripted, api):
    replies = LastWordHeld()
    graph = create_pacore_graph(model_for(scripted(replies)), rounds=[2]).compile()
    contents: list[str] = []

    def seen(message: BaseMessage) -> None:
        if message.content:
            contents.append(message.text)
            if len(contents) == 3:  # words arrive while the last one is still held
                replies.release.set()

    streamed, output = run_streaming(graph, api, seen)
    assert replies.released == [True], "no content streamed before the last token"
    assert_streamed_once(streamed, output, replies.answer, None)


def test_serve_streams_an_answer_without_thinking_token_by_token():
    replies = LastWordHeld()
    with ScriptedServer(replies) as upstream, serving(upstream) as served:
        stream = served.client().chat.completions.create(
            model="pacore-2", messages=question(), stream=True
        )
        contents = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                contents.append(chunk.choices[0].delta.content)
                if len(contents) == 3:
                    replies.release.set()
    assert replies.released == [True], "no content streamed before the last token"
    assert "".join(contents) == replies.answer


@pytest.mark.parametrize(
    "final", ["<think>agree</think>It is 391 after all.", "It is 391 after all."]
)
def test_serve_sends_no_progress_as_reasoning_once_the_answer_began(final):
    """Progress is thinking to an OpenAI client: once the answer began, it is left out."""
    reply = lambda body: final if is_synthesis(body) else "It is 391."  # noqa: E731
    with ScriptedServer(reply) as upstream, serving(upstream) as served:
        stream = served.client().chat.completions.create(
            model="pacore-2",
            messages=question(),
            stream=True,
            extra_body={"pacore": {"progress": True}},
        )
        deltas = [c.choices[0].delta for c in stream if c.choices]
    kinds = [
        "content" if d.content else "reasoning"
        for d in deltas
        if d.content or (d.model_extra or {}).get("reasoning_content")
    ]
    began = kinds.index("content")
    assert "reasoning" not in kinds[began:]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert reasoning.startswith("[pacore] round 1/2: 2 trajectories\n")
    assert "".join(d.content or "" for d in deltas) == "It is 391 after all."


def test_answer_without_streaming_has_the_recorded_id():
    out = (
        create_pacore_graph(fake_list(INLINE), rounds=[2])
        .compile()
        .invoke({"messages": [("user", PROBLEM)]})
    )
    final = out["messages"][-1]
    assert (final.content, final.additional_kwargs["reasoning_content"]) == (ANSWER, THINKING)
    [last] = [t for t in out["pacore"]["trajectories"] if t["round"] == 2]
    assert final.id == last["message_id"] is not None
    # Exploration rounds stream nothing, so their records name no message.
    assert all(t["message_id"] is None for t in out["pacore"]["trajectories"] if t["round"] == 1)


# -- the splitter ------------------------------------------------------------------------

TEXTS = [
    INLINE,
    f"{THINKING}</think>{ANSWER}",
    f" \n{ANSWER} \n",
    "<think>never closed ",
    "<thi",
    "<think></think>",
    "<think> a </think> b </think> c",
    "a <think> b",
    "",
]


def split_in_chunks(splitter: ThinkingSplitter, pieces: list[str]) -> tuple[str, str]:
    """Feeds ``pieces`` one by one; all content and reasoning that came out."""
    outs = [splitter.feed(p) for p in pieces] + [splitter.close()]
    return "".join(c for c, _ in outs), "".join(r for _, r in outs)


@pytest.mark.parametrize("hold", [True, False])
@pytest.mark.parametrize("text", TEXTS)
def test_splitter_does_not_depend_on_chunking(text, hold):
    whole = split_in_chunks(ThinkingSplitter(hold), [text])
    assert split_in_chunks(ThinkingSplitter(hold), list(text)) == whole
    rng = random.Random(text)
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert split_in_chunks(ThinkingSplitter(hold), pieces) == whole


def record(content: str, reasoning: str | None = None, **fields: Any) -> Any:
    return {"content": content, "reasoning": reasoning, "status": "finished"} | {
        "truncated": False,
        **fields,
    }


@pytest.mark.parametrize(
    ("replies", "holds"),
    [
        ([record("It is 4."), record("4")], False),
        # A thinking model, even when its template opens the block: content may be thinking.
        ([record("It is 4."), record("two and two</think>4")], True),
        ([record("4", reasoning="two and two")], True),
        # Nothing complete to judge by: cut at max_tokens (maybe inside its thinking), failed.
        ([record("two and", truncated=True), record("", status="failed")], True),
        ([], True),
    ],
    ids=["plain", "closing-tag", "separated", "none-complete", "none"],
)
def test_the_answer_streams_at_once_after_replies_without_thinking(replies, holds):
    splitter = ThinkingSplitter.after(replies)
    first = splitter.feed(" It is ")
    assert first == (("", "") if holds else ("It is", ""))
    assert (first[0] + splitter.feed("4.")[0] + splitter.close()[0]).strip() == "It is 4."


@pytest.mark.parametrize(
    ("content", "reasoning", "expected"),
    [
        (INLINE, None, (ANSWER, THINKING.strip())),
        (f"{THINKING}</think>{ANSWER}", None, (ANSWER, THINKING.strip())),
        (f" {ANSWER} ", None, (ANSWER, None)),
        ("<think>\n</think>\n\nok", None, ("ok", None)),
        (f"\n\n{ANSWER}", "separated thinking ", (ANSWER, "separated thinking ")),
    ],
)
def test_the_records_answer_is_the_streamed_split(content, reasoning, expected):
    trajectory: Any = {"content": content, "reasoning": reasoning}
    assert split_thinking(trajectory) == expected


def test_an_unclosed_thinking_is_no_answer():
    """A reply cut inside its thinking streamed as thinking: the answer says so too."""
    trajectory: Any = {"content": "<think> still going", "reasoning": None}
    assert split_thinking(trajectory) == ("", "still going")


# -- traces ------------------------------------------------------------------------------


class ChatRuns(BaseCallbackHandler):
    """Records each chat model run's name and PaCoRe metadata, as a tracer would see them."""

    def __init__(self) -> None:
        self.runs: list[tuple[str | None, int, int]] = []

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        meta = metadata or {}
        self.runs.append((name, meta["pacore_round"], meta["pacore_index"]))


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream-messages"])
def test_each_model_call_is_named_for_its_round_and_index(stream: bool):
    runs = ChatRuns()
    graph = create_pacore_graph(fake_list(INLINE), rounds=[3, 2]).compile()
    config: Any = {"callbacks": [runs]}
    if stream:
        list(graph.stream({"messages": [("user", PROBLEM)]}, config, stream_mode="messages"))
    else:
        graph.invoke({"messages": [("user", PROBLEM)]}, config)
    expected = [(r, i) for r, k in enumerate([3, 2, 1], start=1) for i in range(k)]
    # One run per model call (streaming adds none), each named for its round and index.
    assert sorted((r, i) for _, r, i in runs.runs) == expected
    assert sorted(runs.runs, key=lambda run: run[1:]) == [
        (f"pacore round {r} · trajectory {i}", r, i) for r, i in expected
    ]


class _Printed(io.StringIO):
    """A stdout that lets the held last word go once the answer's first words are printed."""

    def __init__(self, replies: LastWordHeld) -> None:
        super().__init__()
        self.replies = replies

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.getvalue().startswith("It is 391"):
            self.replies.release.set()
        return written


@pytest.mark.parametrize("progress", ["--progress", "--no-progress"])
def test_solve_prints_an_answer_without_thinking_as_it_arrives(scripted, progress):
    replies = LastWordHeld()
    server = scripted(replies)
    argv = ["solve", "What is 17 x 23?", "--base-url", server.base_url, "--rounds", "2"]
    ran = pacore_in_process(*argv, progress, stdout=_Printed(replies))
    assert ran.returncode == 0, ran.stderr
    assert replies.released == [True], "the answer was printed only once it was whole"
    assert ran.stdout == replies.answer + "\n"
