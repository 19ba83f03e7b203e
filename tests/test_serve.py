"""``pacore serve`` with real clients: the OpenAI SDK (sync, async, streaming with usage),
langchain-openai's ChatOpenAI, curl; model names, settings, multi-turn chats, ``n``."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from pacore_graph.server.requests import RunSpec
from pacore_graph.server.runs import Run
from pacore_graph.testing import ScriptedServer, word_count
from tests.conftest import Gate
from tests.serve_helpers import (
    ANSWER,
    THINKING,
    Served,
    is_synthesis,
    question,
    respond,
    serving,
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedServer]:
    with ScriptedServer(respond, model="scripted-pacore") as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: ScriptedServer) -> Iterator[Served]:
    with serving(upstream, keepalive_s=0.2, model_kwargs={"max_concurrent_requests": 8}) as s:
        yield s


def calls_about(upstream: ScriptedServer, marker: str) -> list[dict]:
    """The upstream requests of the run whose problem holds ``marker``."""
    return [body for body in upstream.requests if marker in json.dumps(body["messages"])]


def unique(text: str = "What is 2+2?") -> tuple[str, str]:
    marker = uuid.uuid4().hex[:8]
    return marker, f"{text} [{marker}]"


def test_models_lists_presets_and_resolves_explicit_vectors(served):
    client = served.client()
    listed = {m.id: m.model_extra["pacore"]["rounds"] for m in client.models.list()}
    assert listed == {
        "pacore": [4, 1],
        "pacore-low": [4, 1],
        "pacore-medium": [16, 1],
        "pacore-high": [32, 4, 1],
    }
    assert client.models.retrieve("pacore-32x4").model_extra["pacore"]["rounds"] == [32, 4, 1]
    assert client.models.retrieve("pacore-32x4x1").model_extra["pacore"]["rounds"] == [32, 4, 1]
    assert client.models.retrieve("PaCoRe-8").model_extra["pacore"]["rounds"] == [8, 1]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("pacore-8b")


def test_sdk_sync_answers_with_thinking_usage_and_the_runs_record(served, upstream):
    marker, text = unique()
    reply = served.client().chat.completions.create(model="pacore-2", messages=question(text))
    message = reply.choices[0].message
    assert message.content == ANSWER
    assert message.model_extra["reasoning_content"] == THINKING
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "pacore-2"
    calls = calls_about(upstream, marker)
    assert len(calls) == 3  # K = [2, 1]
    # usage: every trajectory's completion tokens (the scripted server counts words).
    replies = [respond(body) for body in calls]
    assert reply.usage.completion_tokens == sum(word_count(r.content) for r in replies)
    [run] = reply.model_extra["pacore"]["runs"]
    assert run["ttc_tokens"] == reply.usage.completion_tokens
    assert run["max_prompt_tokens"] == reply.usage.prompt_tokens
    assert run["round_vector"] == [2, 1] and run["trajectories"] == 3
    assert [(r["round"], r["k"], r["finished"]) for r in run["rounds"]] == [(1, 2, 2), (2, 1, 1)]
    assert sum(r["completion_tokens"] for r in run["rounds"]) == run["ttc_tokens"]
    assert run["thread_status"] == "new" and run["thread_id"] is None


async def test_sdk_async_answers(served):
    client = served.async_client()
    replies = [
        await client.chat.completions.create(model="pacore-2", messages=question())
        for _ in range(2)
    ]
    assert [r.choices[0].message.content for r in replies] == [ANSWER, ANSWER]
    assert replies[0].id != replies[1].id
    await client.close()


def test_sdk_stream_sends_the_final_round_token_by_token_and_usage_last(served):
    stream = served.client().chat.completions.create(
        model="pacore-2",
        messages=question(),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    content = [d.content for d in deltas if d.content]
    thinking = [d.model_extra.get("reasoning_content") for d in deltas]
    assert "".join(content) == ANSWER
    assert len(content) > 1  # streamed, not sent whole at the end
    assert "".join(t for t in thinking if t).strip() == THINKING
    assert deltas[0].role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == last.model_extra["pacore"]["runs"][0]["ttc_tokens"]
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}


def test_sampling_and_settings_reach_every_call(served, upstream):
    marker, text = unique()
    served.client().chat.completions.create(
        model="pacore-3",
        messages=question(text),
        temperature=0.3,
        top_p=0.9,
        max_tokens=77,
        stop=["STOP"],
        extra_body={"top_k": 5, "pacore": {"min_success": 1, "extra_body": {"min_p": 0.1}}},
    )
    calls = calls_about(upstream, marker)
    assert len(calls) == 4
    for body in calls:
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 77)
        assert (body["stop"], body["top_k"], body["min_p"]) == (["STOP"], 5, 0.1)
        assert body["model"] == "scripted-pacore"  # the upstream's model, not pacore-3
    # max_completion_tokens (what newer clients send) is max_tokens.
    marker, text = unique()
    served.client().chat.completions.create(
        model="pacore-1", messages=question(text), max_completion_tokens=33
    )
    assert {body["max_tokens"] for body in calls_about(upstream, marker)} == {33}


def test_multi_turn_chat_passes_through_as_pacore_treats_it(served, upstream):
    marker, text = unique("And times 3?")
    chat = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": text},
    ]
    served.client().chat.completions.create(model="pacore-2", messages=chat)
    calls = calls_about(upstream, marker)
    first = [c for c in calls if not is_synthesis(c)]
    assert len(first) == 2
    assert all(c["messages"] == chat for c in first)  # round 1: the chat unchanged
    [final] = [c for c in calls if is_synthesis(c)]
    assert final["messages"][:3] == chat[:3]  # earlier turns pass unchanged
    assert text in final["messages"][3]["content"] != text  # the synthesis prompt


def test_n_runs_independent_runs_as_choices(served, upstream):
    marker, text = unique()
    reply = served.client().chat.completions.create(model="pacore-2", messages=question(text), n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert {c.message.content for c in reply.choices} == {ANSWER}
    assert len(calls_about(upstream, marker)) == 6  # two runs of K = [2, 1]
    runs = reply.model_extra["pacore"]["runs"]
    assert [r["index"] for r in runs] == [0, 1]
    assert reply.usage.completion_tokens == sum(r["ttc_tokens"] for r in runs)


def test_n_streams_every_choice(served):
    stream = served.client().chat.completions.create(
        model="pacore-1", messages=question(), n=2, stream=True
    )
    content: dict[int, str] = {0: "", 1: ""}
    finished = set()
    for chunk in stream:
        for choice in chunk.choices:
            content[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished.add(choice.index)
    assert content == {0: ANSWER, 1: ANSWER} and finished == {0, 1}


def test_langchain_chat_openai_invokes_and_streams(served):
    chat = ChatOpenAI(base_url=served.base_url, api_key="client-key", model="pacore-2")
    assert chat.invoke("What is 2+2?").content == ANSWER
    pieces = [chunk.content for chunk in chat.stream("What is 2+2?")]
    assert "".join(pieces) == ANSWER
    assert sum(1 for piece in pieces if piece) > 1
    message = chat.invoke("What is 2+2?")
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] > 0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_gets_json_and_server_sent_events(served):
    body = {"model": "pacore-2", "messages": question()}
    command = [
        "curl",
        "-sS",
        "-N",
        f"{served.base_url}/chat/completions",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Authorization: Bearer any",
    ]
    plain = subprocess.run([*command, "-d", json.dumps(body)], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["choices"][0]["message"]["content"] == ANSWER
    streamed = subprocess.run(
        [*command, "-d", json.dumps({**body, "stream": True})], capture_output=True, text=True
    )
    assert streamed.returncode == 0, streamed.stderr
    events = [
        line[len("data: ") :] for line in streamed.stdout.splitlines() if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    assert "".join(d.get("content") or "" for d in deltas) == ANSWER


def test_progress_goes_into_reasoning_content_when_asked(served):
    stream = served.client().chat.completions.create(
        model="pacore-2",
        messages=question(),
        stream=True,
        extra_body={"pacore": {"progress": True}},
    )
    thinking = "".join(
        c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in stream if c.choices
    )
    assert thinking.startswith("[pacore] round 1/2: 2 trajectories\n")
    assert "[pacore] round 1 trajectory 0: finished" in thinking
    assert "[pacore] round 1 done: 2/2 finished" in thinking
    assert THINKING in thinking


def test_keepalive_comments_flow_while_exploration_runs(upstream):
    seen = threading.Event()
    gate = Gate(respond)
    gate.open_when(seen.is_set)  # round 1 answers only once the client saw a keep-alive
    with ScriptedServer(gate) as held, serving(held, keepalive_s=0.05) as served:
        body = {"model": "pacore-2", "messages": question(), "stream": True}
        lines = []
        with httpx.stream(
            "POST", f"{served.base_url}/chat/completions", json=body, timeout=30
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                lines.append(line)
                if line.startswith(": keep-alive"):
                    seen.set()
        assert ": keep-alive" in lines
        assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
        data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert (
            "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
            == ANSWER
        )


def test_an_answer_that_did_not_stream_arrives_whole(upstream):
    # After replies with thinking, one with neither <think> nor separated thinking is held to
    # its end by the graph (it could still close a block the chat template opened).
    def reply(body: dict) -> str:
        return "plain words here" if is_synthesis(body) else "<think>a</think>4"

    with (
        ScriptedServer(reply) as plain,
        serving(plain) as served,
    ):
        stream = served.client().chat.completions.create(
            model="pacore-1", messages=question(), stream=True
        )
        content = [c.choices[0].delta.content for c in stream if c.choices]
    assert [c for c in content if c] == ["plain words here"]


def test_health_and_metrics(served):
    health = httpx.get(f"{served.url}/health").json()
    assert health["status"] == "ok" and health["durable"] is False
    served.client().chat.completions.create(model="pacore-1", messages=question())
    text = httpx.get(f"{served.url}/metrics").text
    for name in (
        "pacore_runs_in_flight",
        'pacore_runs_total{outcome="ok"}',
        "pacore_run_seconds_bucket",
        'pacore_requests_total{code="200"}',
        'pacore_trajectories_total{status="finished"}',
        "pacore_completion_tokens_total",
        "pacore_upstream_errors_total",
        "process_cpu_seconds_total",
    ):
        assert name in text, name


def test_a_late_client_gets_the_stream_replayed_in_order():
    spec = RunSpec(model="pacore-1", rounds=[1, 1], messages=[], context={}, fingerprint="")
    run = Run("key", spec, None, stream=True)
    events = [
        ("status", "new"),
        ("token", "", "thinking ", "m1"),
        ("token", "", "more", "m1"),
        ("token", "The ", "", "m1"),
        ("token", "answer", "", "m1"),
        ("token", "", "late thinking", "m1"),
        ("token", "again", "", "m2"),  # a retried call: another message
    ]
    for event in events:
        run.emit(event)
    queue: asyncio.Queue = asyncio.Queue()
    run.subscribe(queue, 3)
    replayed = [queue.get_nowait() for _ in range(queue.qsize())]
    assert replayed == [(3, event) for event in events]
    run.emit(("token", "!", "", "m2"))  # live events go out one by one
    assert queue.get_nowait() == (3, ("token", "!", "", "m2"))


def test_a_server_alone_in_its_process_makes_full_collections_rare():
    import gc

    from langchain_core.language_models import FakeListChatModel

    from pacore_graph import create_pacore_graph
    from pacore_graph.server.service import Service
    from pacore_graph.server.settings import ServeSettings

    async def started(freeze_gc: bool) -> tuple[int, tuple[int, int, int]]:
        graph = create_pacore_graph(FakeListChatModel(responses=["4"]), rounds="1")
        async with Service(ServeSettings(freeze_gc=freeze_gc), graph).running():
            return gc.get_freeze_count(), gc.get_threshold()

    before = gc.get_threshold()
    gc.unfreeze()  # an in-process `pacore` command of an earlier test tuned this worker's
    gc.set_threshold(700, 10, 10)
    try:
        assert asyncio.run(started(False)) == (0, (700, 10, 10))  # a library leaves it be
        frozen, threshold = asyncio.run(started(True))  # `pacore serve`, `pacore mcp`
        assert frozen > 10_000 and threshold == (100_000, 50, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
