"""ChatOpenAICompatible against the scripted server: what PaCoRe records (thinking,
finish_reason, exact usage), a cut stream, tools and structured output, several event
loops, and the defaults (no SDK retries, the key from the environment)."""

import asyncio
import json

import openai
import pytest
from langchain_core.messages import AIMessageChunk
from pydantic import BaseModel

from pacore_graph import ChatOpenAICompatible
from pacore_graph.errors import BackendUnreachableError, IncompleteResponseError
from pacore_graph.testing import Reply
from tests.conftest import model_for

REPLY = Reply(
    content="The answer is 4.",
    reasoning_content="two and two make four",
    finish_reason="length",
    prompt_tokens=17,
    completion_tokens=23,
)


def assert_recorded(message) -> None:
    assert message.content == "The answer is 4."
    assert message.additional_kwargs["reasoning_content"].strip() == "two and two make four"
    assert message.response_metadata["finish_reason"] == "length"
    usage = message.usage_metadata
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (17, 23, 40)


def test_invoke_keeps_thinking_finish_reason_and_usage(scripted):
    server = scripted(lambda body: REPLY)
    assert_recorded(model_for(server).invoke("2+2?"))
    assert "stream" not in server.requests[0] or not server.requests[0]["stream"]


# Plain async calls go directly on aiohttp unless direct_http=False; both give the same.
PATHS = pytest.mark.parametrize("direct_http", [True, False], ids=["direct", "sdk"])


@PATHS
def test_ainvoke_keeps_thinking_finish_reason_and_usage(scripted, direct_http):
    server = scripted(lambda body: REPLY)
    assert_recorded(asyncio.run(model_for(server, direct_http=direct_http).ainvoke("2+2?")))


@pytest.mark.parametrize("api", ["stream", "astream"])
def test_a_stream_keeps_thinking_finish_reason_and_usage(scripted, api):
    server = scripted(lambda body: REPLY)
    model = model_for(server)

    async def collect():
        return [chunk async for chunk in model.astream("2+2?")]

    chunks = list(model.stream("2+2?")) if api == "stream" else asyncio.run(collect())
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert_recorded(whole)
    assert server.requests[0]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_thinking_under_either_key(key):
    """vLLM's reasoning parsers said ``reasoning_content``; newer vLLM says ``reasoning``."""
    model = ChatOpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m")
    response = {
        "id": "x",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "4", key: "hm"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    message = model._create_chat_result(response).generations[0].message
    assert message.additional_kwargs["reasoning_content"] == "hm"
    chunk = {"model": "m", "choices": [{"index": 0, "delta": {key: "hm"}}]}
    generation = model._convert_chunk_to_generation_chunk(chunk, AIMessageChunk, None)
    assert generation.message.additional_kwargs["reasoning_content"] == "hm"


@pytest.mark.parametrize("api", ["stream", "astream"])
def test_a_stream_cut_half_way_raises_incomplete_response(scripted, api):
    server = scripted(lambda body: Reply(content="one two three four five six", fault="cut"))
    model = model_for(server)

    async def collect():
        return [chunk async for chunk in model.astream("count")]

    with pytest.raises(IncompleteResponseError):
        list(model.stream("count")) if api == "stream" else asyncio.run(collect())


class Weather(BaseModel):
    """The weather in a city."""

    city: str


WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "Weather", "arguments": json.dumps({"city": "Paris"})},
}


@pytest.mark.parametrize("streamed", [False, True])
def test_bind_tools_sends_the_tools_and_returns_tool_calls(scripted, streamed):
    server = scripted(lambda body: Reply(tool_calls=[WEATHER_CALL], finish_reason="tool_calls"))
    model = model_for(server).bind_tools([Weather])

    async def call():
        if not streamed:
            return await model.ainvoke("Weather in Paris?")
        whole = None
        async for chunk in model.astream("Weather in Paris?"):
            whole = chunk if whole is None else whole + chunk
        return whole

    message = asyncio.run(call())
    tools = server.requests[0]["tools"]
    assert [t["function"]["name"] for t in tools] == ["Weather"]
    assert tools[0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    assert [(c["name"], c["args"], c["id"]) for c in message.tool_calls] == [
        ("Weather", {"city": "Paris"}, "call_1")
    ]


def test_structured_output_by_function_calling(scripted):
    server = scripted(lambda body: Reply(tool_calls=[WEATHER_CALL], finish_reason="tool_calls"))
    model = model_for(server).with_structured_output(Weather, method="function_calling")
    assert asyncio.run(model.ainvoke("Weather in Paris?")) == Weather(city="Paris")
    assert server.requests[0]["tool_choice"]["function"]["name"] == "Weather"


def test_structured_output_by_json_schema(scripted):
    server = scripted(lambda body: Reply(content=json.dumps({"city": "Paris"})))
    model = model_for(server).with_structured_output(Weather, method="json_schema")
    assert asyncio.run(model.ainvoke("Weather in Paris?")) == Weather(city="Paris")
    assert server.requests[0]["response_format"]["type"] == "json_schema"


def test_one_model_serves_several_event_loops_and_closes_each_pool(scripted):
    server = scripted(lambda body: "ok")
    model = model_for(server)

    async def twice():
        out = [await model.ainvoke("a"), await model.ainvoke("b")]
        assert model.async_clients == 1  # one pooled client for this loop's calls
        return out

    for _ in range(3):
        assert [m.content for m in asyncio.run(twice())] == ["ok", "ok"]
        assert model.async_clients == 0  # closed with its loop, not kept alive by the model
    assert len(server.requests) == 6


def test_extra_body_of_a_call_adds_to_the_models(scripted):
    server = scripted(lambda body: "ok")
    model = model_for(server, extra_body={"top_k": 20, "min_p": 0.0})
    asyncio.run(model.ainvoke("a", extra_body={"min_p": 0.1}))
    assert server.requests[0]["top_k"] == 20 and server.requests[0]["min_p"] == 0.1


@PATHS
def test_no_sdk_retries_by_default(scripted, direct_http):
    """Retries are the graph's RetryPolicy's, so one failed call is one request."""
    server = scripted(lambda body: Reply(status=503, error="overloaded"))
    with pytest.raises(openai.InternalServerError) as info:
        asyncio.run(model_for(server, direct_http=direct_http).ainvoke("a"))
    assert info.value.message == "Error code: 503 - overloaded"
    assert len(server.requests) == 1


@PATHS
def test_an_http_error_is_the_sdks_with_its_response(scripted, direct_http):
    server = scripted(
        lambda body: Reply(status=429, error="slow down", headers={"Retry-After": "7"})
    )
    with pytest.raises(openai.RateLimitError) as info:
        asyncio.run(model_for(server, direct_http=direct_http).ainvoke("a"))
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["message"] == "slow down"


@pytest.mark.parametrize("env_key", [None, "sk-from-the-environment"])
def test_the_api_key_defaults_to_the_environment_else_empty(scripted, monkeypatch, env_key):
    if env_key is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", env_key)
    server = scripted(lambda body: "ok")
    model = ChatOpenAICompatible(base_url=server.base_url, model=server.model)
    model.invoke("a")
    asyncio.run(model.ainvoke("b"))
    assert server.authorizations == [f"Bearer {env_key or 'EMPTY'}"] * 2


@PATHS
def test_a_refused_connection_is_a_connection_error_not_a_timeout(direct_http):
    model = ChatOpenAICompatible(
        base_url="http://127.0.0.1:9/v1", model="m", direct_http=direct_http
    )
    with pytest.raises(openai.APIConnectionError) as info:
        asyncio.run(model.ainvoke("a"))
    assert not isinstance(info.value, openai.APITimeoutError)


@PATHS
def test_a_hanging_call_times_out(scripted, direct_http):
    server = scripted(lambda body: Reply(content="late", delay=30))
    model = model_for(server, timeout=0.3, direct_http=direct_http)
    with pytest.raises(openai.APITimeoutError):
        asyncio.run(model.ainvoke("a"))


def test_list_models_and_an_unreachable_endpoint_in_one_line(scripted):
    server = scripted()
    assert model_for(server).list_models() == ["scripted"]
    with pytest.raises(BackendUnreachableError) as info:
        ChatOpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m").list_models()
    assert str(info.value).startswith("cannot reach the model endpoint http://127.0.0.1:9/v1")
    assert "\n" not in str(info.value)
