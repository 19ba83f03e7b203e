"""Guards of the private LangGraph APIs in `pacore_graph._compat`: each test fails when a
LangGraph upgrade changes what pacore-graph relies on."""

from __future__ import annotations

import operator
import subprocess
import sys
from dataclasses import dataclass
from typing import Annotated

import httpx2
import openai
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict

from pacore_graph._compat import RunnableCallable, is_resuming, read_channel, sdk_status_error


class State(TypedDict, total=False):
    seen: list[str]


@dataclass
class Context:
    tag: str = "none"


def _graph() -> StateGraph:
    def sync(state: State, runtime: Runtime[Context]) -> State:
        return {"seen": [f"sync:{runtime.context.tag}"]}

    async def asynchronous(state: State, runtime: Runtime[Context]) -> State:
        return {"seen": [f"async:{runtime.context.tag}"]}

    builder = StateGraph(State, context_schema=Context)
    builder.add_node("node", RunnableCallable(sync, asynchronous, name="node", trace=False))
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder


def test_runnable_callable_runs_sync_and_async_bodies_with_the_runtime_injected():
    graph = _graph().compile()
    assert graph.invoke({}, context=Context(tag="a"))["seen"] == ["sync:a"]


async def test_runnable_callable_async_body_gets_the_runtime():
    graph = _graph().compile()
    assert (await graph.ainvoke({}, context=Context(tag="b")))["seen"] == ["async:b"]


def test_is_resuming_is_true_only_in_the_first_step_of_a_resumed_run():
    seen: list[tuple[str, bool]] = []
    fail = {"once": True}

    def first(state: State, config) -> State:
        seen.append(("first", is_resuming(config)))
        return {}

    def second(state: State, config) -> State:
        seen.append(("second", is_resuming(config)))
        if fail.pop("once", False):
            raise RuntimeError("crash")
        return {}

    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(RuntimeError):
        graph.invoke({"seen": []}, config)
    graph.invoke(None, config)
    assert seen == [("first", False), ("second", False), ("second", True)]


class Fan(TypedDict, total=False):
    prompt: str
    seen: Annotated[list[str], operator.add]


def test_read_channel_reads_the_state_from_a_send_task():
    def start(state: Fan) -> Fan:
        return {"prompt": "shared"}

    def fan(state: Fan) -> list[Send]:
        return [Send("worker", {"i": i}) for i in range(3)]

    def worker(task: dict, config) -> Fan:  # sees only its payload
        return {"seen": [f"{task['i']}:{read_channel(config, 'prompt')}"]}

    builder = StateGraph(Fan)
    builder.add_node("start", start)
    builder.add_node("worker", worker)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", fan, ["worker"])
    builder.add_edge("worker", END)
    out = builder.compile().invoke({})
    assert sorted(out["seen"]) == ["0:shared", "1:shared", "2:shared"]


def test_read_channel_outside_a_task_is_one_error():
    with pytest.raises(RuntimeError, match="not inside a running LangGraph task"):
        read_channel({}, "prompt")


FALLBACK = """
import asyncio, importlib, sys

import langgraph._internal._constants as real
from langchain_core.language_models import FakeListChatModel

import pacore_graph._compat as compat
from pacore_graph import create_pacore_graph

# As after a rename upstream: importing either private module fails.
sys.modules["langgraph._internal._constants"] = None
sys.modules["langgraph._internal._runnable"] = None
importlib.reload(compat)
assert compat.RunnableCallable is None
assert (compat.CONF, compat.CONFIG_KEY_READ, compat.CONFIG_KEY_RESUMING) == (
    real.CONF, real.CONFIG_KEY_READ, real.CONFIG_KEY_RESUMING
)
model = FakeListChatModel(responses=["<think>a</think>41", "<think>b</think>42", "42"])
graph = create_pacore_graph(model, rounds=2).compile()
question = {"messages": [("user", "6*7?")]}
assert graph.invoke(question)["messages"][-1].content == "42"
assert asyncio.run(graph.ainvoke(question))["messages"][-1].content == "42"
print("fallback ok")
"""


def test_without_the_private_modules_the_public_fallbacks_run_the_graph():
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "fallback ok", done.stderr


def _error_reply(status: int, body: bytes) -> httpx2.Response:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    return httpx2.Response(status, content=body, request=request)


def test_the_sdk_builds_its_exception_for_an_http_error_as_the_direct_path_uses_it():
    # The direct aiohttp path raises what the SDK's client would: the class by status and
    # the body's message, through the client's private builder.
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    assert callable(getattr(client, "_make_status_error_from_response", None))
    error = sdk_status_error(client, _error_reply(429, b'{"error": {"message": "slow down"}}'))
    assert type(error) is openai.RateLimitError and str(error) == "Error code: 429 - slow down"
    assert error.body == {"message": "slow down"}
    assert type(sdk_status_error(client, _error_reply(503, b"busy"))) is openai.InternalServerError


def test_without_the_sdks_builder_an_http_error_is_still_the_sdks_status_error():
    error = sdk_status_error(object(), _error_reply(429, b"{}"))
    assert isinstance(error, openai.APIStatusError) and str(error) == "Error code: 429"
    assert error.status_code == 429
