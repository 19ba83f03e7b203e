"""PaCoRe as an MCP tool: ``pacore mcp`` over stdio with the mcp SDK's own client, ``/mcp``
of ``pacore serve`` over streamable HTTP, and langchain-mcp-adapters inside an agent."""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient
from langgraph.prebuilt import create_react_agent
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import CancelledNotification, CancelledNotificationParams, ClientNotification

from pacore_graph.cli import main as cli_main
from pacore_graph.testing import Reply, ScriptedServer
from tests.conftest import pacore_argv, saved_trajectories
from tests.serve_helpers import ROOT, serve_command, serve_process, serving, wait_ready
from tests.servers import free_port

pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")

ANSWER = "2 + 2 = 4."
PROBLEM = "What is 2+2?"


def respond(body: dict[str, Any]) -> Reply:
    """Drafts of 10 tokens; the synthesis (its prompt lists references) answers in 7."""
    if "Reference 1:" in body["messages"][-1]["content"]:
        return Reply(content=f"<think>both agree</think>{ANSWER}", completion_tokens=7)
    return Reply(content="<think>two and two</think>It is 4.", completion_tokens=10)


def held(body: dict[str, Any]) -> Reply:
    """Every call held far past any test: only a cancel ends it."""
    return Reply(content="late", delay=120)


async def until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    """Waits, without blocking the loop, until ``predicate`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def stdio_params(upstream: ScriptedServer, *extra: str) -> StdioServerParameters:
    argv = pacore_argv("mcp", "--base-url", upstream.base_url, "--rounds", "3", *extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=ROOT)


@contextlib.asynccontextmanager
async def stdio_session(upstream: ScriptedServer, *extra: str) -> AsyncIterator[ClientSession]:
    async with (
        stdio_client(stdio_params(upstream, *extra)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()  # request id 0: the first call is id 1
        yield session


@contextlib.asynccontextmanager
async def http_session(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=120) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def cancel(session: ClientSession, request_id: int) -> None:
    await session.send_notification(
        ClientNotification(
            CancelledNotification(params=CancelledNotificationParams(requestId=request_id))
        )
    )


async def call_with_progress(session: ClientSession, arguments: dict[str, Any]):
    notes: list[tuple[float, float | None, str | None]] = []

    async def note(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, total, message))

    return await session.call_tool("pacore", arguments, progress_callback=note), notes


SUMMARY = {"rounds": [3, 1], "trajectories": 4, "ttc_tokens": 37, "stopped": 0, "failed": 0}


async def test_stdio_lists_the_tool_and_answers_in_four_calls_with_progress(scripted):
    upstream = scripted(respond)
    async with stdio_session(upstream) as session:
        (tool,) = (await session.list_tools()).tools
        assert tool.name == "pacore" and tool.inputSchema["required"] == ["problem"]
        assert set(tool.inputSchema["properties"]) == {"problem", "rounds"}
        assert "hard problem" in tool.description and "never for lookups" in tool.description
        assert set(tool.outputSchema["properties"]) == set(SUMMARY)

        result, notes = await call_with_progress(session, {"problem": PROBLEM})
    assert not result.isError
    assert [c.text for c in result.content] == [ANSWER]
    assert result.structuredContent == SUMMARY
    assert len(upstream.requests) == 4
    # 3 drafts, their compaction, the final call, its round's end: 6 steps, each notified.
    assert [(p, t) for p, t, _ in notes] == [(n, 6) for n in range(1, 7)]
    assert sum("finished, 10 tokens" in m for _, _, m in notes) == 3
    assert notes[3][2] == "round 1 compacted: 3 of 3 go on as references"
    assert notes[5][2] == "round 2 done: the answer is in"


async def test_bad_arguments_are_one_line_tool_errors_and_the_server_goes_on(scripted):
    upstream = scripted(respond)
    cases = [
        ({}, "problem: Field required"),
        ({"problem": "   "}, "problem: the last user message is empty"),
        ({"problem": PROBLEM, "rounds": "lots"}, "lots"),
        ({"problem": PROBLEM, "rounds": 0}, "rounds"),
        ({"problem": PROBLEM, "rounds": "5000"}, "5000"),
    ]
    async with stdio_session(upstream) as session:
        for arguments, named in cases:
            result = await session.call_tool("pacore", arguments)
            (text,) = [c.text for c in result.content]
            assert result.isError and len(text.splitlines()) == 1 and named in text, text
        assert upstream.requests == []
        result = await session.call_tool("pacore", {"problem": PROBLEM, "rounds": 2})
    assert not result.isError and result.content[0].text == ANSWER
    assert result.structuredContent["rounds"] == [2, 1] and len(upstream.requests) == 3


async def test_a_cancel_stops_the_runs_calls(scripted):
    upstream = scripted(held)
    async with stdio_session(upstream) as session:
        call = asyncio.ensure_future(session.call_tool("pacore", {"problem": PROBLEM}))
        await until(lambda: len(upstream.requests) == 3)
        await cancel(session, 1)
        with pytest.raises(McpError, match="cancelled"):
            await call
        await until(lambda: upstream.cancelled == 3)  # each held call was hung up on
        assert len(upstream.requests) == 3


def _thread_writes(redis_url: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        return [k.decode().split("{")[1].split("}")[0] for k in client.keys("pacore:*:writes")]
    finally:
        client.close()


async def test_with_redis_a_cancelled_call_keeps_its_trajectories_and_resumes(scripted, redis_url):
    release = False

    def two_then_hold(body: dict[str, Any]) -> Reply:
        if not release and sum("Reference" not in str(b) for b in upstream.requests) > 2:
            return held(body)  # the third draft, until the cancel
        return respond(body)

    upstream = scripted(two_then_hold)
    async with stdio_session(upstream, "--redis-url", redis_url) as session:
        call = asyncio.ensure_future(session.call_tool("pacore", {"problem": PROBLEM}))
        await until(lambda: len(upstream.requests) == 3)
        await until(
            lambda: any(saved_trajectories(redis_url, t) == 2 for t in _thread_writes(redis_url))
        )
        await cancel(session, 1)
        with pytest.raises(McpError):
            await call
        await until(lambda: upstream.cancelled == 1)
        release = True
        result = await session.call_tool("pacore", {"problem": PROBLEM})
        # The resume asked only the cancelled draft again, then the synthesis.
        assert len(upstream.requests) == 5
        again = await session.call_tool("pacore", {"problem": PROBLEM})  # read back
    for answered in (result, again):
        assert not answered.isError and answered.content[0].text == ANSWER
        assert answered.structuredContent == SUMMARY
    assert len(upstream.requests) == 5


async def test_http_mcp_of_pacore_serve_needs_the_api_key_and_answers_with_it(scripted, tmp_path):
    upstream = scripted(respond)
    (tmp_path / "keys").write_text("client-key\n")
    port = free_port()
    command = serve_command(
        upstream, port, "--rounds", "3", "--api-keys-file", str(tmp_path / "keys")
    )
    with serve_process(command, tmp_path / "serve.log", port) as (served, proc):
        wait_ready(served, proc, tmp_path / "serve.log")
        url = f"{served.url}/mcp"
        hello = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as client:
            for headers in ({}, {"Authorization": "Bearer wrong-key"}):
                refused = await client.post(url, json=hello, headers={**accept, **headers})
                assert refused.status_code == 401, refused.text
                assert "API key" in refused.json()["error"]["message"]
        async with http_session(url, "client-key") as session:
            assert [t.name for t in (await session.list_tools()).tools] == ["pacore"]
            result, notes = await call_with_progress(session, {"problem": PROBLEM})
    assert not result.isError and result.content[0].text == ANSWER
    assert result.structuredContent == SUMMARY and len(notes) == 6
    assert len(upstream.requests) == 4


async def test_http_mcp_calls_share_the_servers_max_runs(scripted):
    upstream = scripted(held)
    with serving(upstream, max_runs=1, graph_defaults={"rounds": 3}) as served:
        body = {"model": "pacore", "messages": [{"role": "user", "content": "other"}]}
        async with httpx.AsyncClient(timeout=120) as client:
            busy = asyncio.ensure_future(
                client.post(f"{served.base_url}/chat/completions", json=body)
            )
            await until(lambda: len(upstream.requests) == 3)
            async with http_session(f"{served.url}/mcp") as session:
                result = await session.call_tool("pacore", {"problem": PROBLEM})
            busy.cancel()
    (text,) = [c.text for c in result.content]
    assert result.isError and "--max-runs 1" in text and len(text.splitlines()) == 1
    assert len(upstream.requests) == 3


class ToolCallingFake(GenericFakeChatModel):
    """The agent's scripted model: its first reply calls the tool, its second answers."""

    def bind_tools(self, tools, **kwargs):
        return self


async def test_langchain_mcp_adapters_load_the_tool_into_a_react_agent(scripted):
    upstream = scripted(respond)
    params = stdio_params(upstream)
    client = MultiServerMCPClient(
        {
            "pacore": {
                "transport": "stdio",
                "command": params.command,
                "args": params.args,
                "env": params.env,
            }
        }
    )
    (tool,) = await client.get_tools()
    assert tool.name == "pacore" and "problem" in tool.args
    call = {"name": "pacore", "args": {"problem": PROBLEM}, "id": "call-1"}
    model = ToolCallingFake(
        messages=iter([AIMessage("", tool_calls=[call]), AIMessage("PaCoRe says 4.")])
    )
    agent = create_react_agent(model, [tool])
    out = await agent.ainvoke({"messages": [("user", "Ask PaCoRe what 2+2 is.")]})
    (result,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert result.tool_call_id == "call-1" and ANSWER in str(result.content)
    assert result.artifact["structured_content"] == SUMMARY
    assert out["messages"][-1].content == "PaCoRe says 4."
    assert len(upstream.requests) == 4


@pytest.mark.parametrize(
    ("extra", "named"),
    [(["--rounds", "lots"], "lots"), (["--redis-url", "redis://127.0.0.1:1/0"], "127.0.0.1:1")],
)
def test_a_bad_option_or_an_unreachable_redis_is_one_line_before_serving(
    scripted, capsys, extra, named
):
    upstream = scripted(respond)
    status = cli_main(["mcp", "--base-url", upstream.base_url, *extra])
    err = capsys.readouterr().err
    assert status != 0 and err.startswith("pacore: error: ") and named in err, err
    assert len(err.splitlines()) == 1 and upstream.requests == []
