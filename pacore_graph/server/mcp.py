"""PaCoRe as a Model Context Protocol tool, on the official ``mcp`` SDK (FastMCP): one tool,
``pacore``, served over stdio by ``pacore mcp`` and over streamable HTTP at ``/mcp`` of
``pacore serve``. A call is a run of the `Service`; its bounds, resume (with Redis: thread
`default_thread_id`), progress notifications and cancel: docs/mcp.md."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from langchain_core.messages import BaseMessage, HumanMessage
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Headers
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pacore_graph.context import merge_context
from pacore_graph.messages import last_user_index, message_text
from pacore_graph.resume import run_settings
from pacore_graph.secrets import redact
from pacore_graph.server.completions import record_of
from pacore_graph.server.errors import ApiError, api_error, one_line
from pacore_graph.server.requests import RunSpec, fingerprint
from pacore_graph.server.runs import END, Event
from pacore_graph.threads import default_thread_id
from pacore_graph.validation import check_input, check_settings

if TYPE_CHECKING:
    from pacore_graph.server.service import Service

DESCRIPTION = (
    "Solves a hard problem (competition mathematics, logic, algorithms, a proof, a subtle "
    "estimate) by parallel coordinated reasoning: many independent attempts, then a "
    "synthesis of their conclusions. Slow and thorough: minutes and many thousands of "
    "tokens per call. Use it for problems worth that effort, never for lookups, facts or "
    "quick questions. Give the complete, self-contained problem statement."
)
ROUNDS = (
    "Optional effort: a preset (low, medium, high) or the exploration rounds such as '8,4' "
    "(the final round is added); default: the server's."
)


class Summary(BaseModel):
    """The run's accounting: the tool's structured content."""

    rounds: list[int] = Field(description="the round vector run, the final round included")
    trajectories: int = Field(description="model calls of the run")
    ttc_tokens: int = Field(description="test-time compute: completion tokens of all calls")
    stopped: int = Field(description="calls stopped as stragglers or by a budget")
    failed: int = Field(description="calls that failed")


class _FastMCP(FastMCP):
    """FastMCP whose tool errors are one line (argument errors name the argument)."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        try:
            return await super().call_tool(name, arguments)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                error = cause.errors()[0]
                where = ".".join(str(part) for part in error["loc"]) or "arguments"
                raise ToolError(f"{where}: {error['msg']}") from None
            raise ToolError(one_line(str(cause or exc))) from None


STEPS = {
    "trajectory_finished": "round {round}: #{index} finished, {completion_tokens} tokens",
    "trajectory_failed": "round {round}: #{index} failed: {error}",
    "trajectory_stopped": "round {round}: #{index} stopped: {error}",
    "round_finished": "round {round} compacted: {references} of {k} go on as references",
    "answered": "round {round} done: the answer is in",
}
"""The graph events that end a step of a run, each a progress notification."""


def create_mcp_server(service: Service, *, host: str = "127.0.0.1") -> FastMCP:
    """The MCP server of ``service``: its one tool runs PaCoRe on the service's runs. ``host``
    is where HTTP listens: on loopback, the SDK refuses requests naming another host."""
    server = _FastMCP("pacore", host=host, log_level="WARNING")

    @server.tool(
        name="pacore", description=DESCRIPTION, annotations=ToolAnnotations(readOnlyHint=True)
    )
    async def pacore(
        problem: Annotated[str, Field(description="The complete, self-contained problem.")],
        ctx: Context,
        rounds: Annotated[str | int | None, Field(description=ROUNDS)] = None,
    ) -> Annotated[CallToolResult, Summary]:
        messages: list[BaseMessage] = [HumanMessage(problem)]
        context: dict[str, Any] = {} if rounds is None else {"rounds": rounds}
        settings = merge_context(service.runs.defaults, context)
        try:
            vector = check_settings(settings)
            last_user_index(messages)
            check_input(messages, settings)
        except Exception as exc:
            error = api_error(exc)
            where = {"invalid_rounds": "rounds: ", "invalid_messages": "problem: "}
            raise ToolError(where.get(error.code or "", "") + error.message) from None
        identity = run_settings(settings)
        spec = RunSpec("pacore", vector, messages, context, fingerprint(messages, identity))
        headers = getattr(ctx.request_context.request, "headers", {})  # None over stdio
        namespace = service.settings.api_keys.check(headers.get("authorization"))
        key = default_thread_id(messages, identity) if service.runs.durable else None
        try:
            (run,) = service.runs.claim(spec, key, namespace)
            while run.task is not None and run.task.cancelling():  # a cancelled call's run
                await asyncio.wait([run.task])  # lets go of its thread, then claim it anew
                (run,) = service.runs.claim(spec, key, namespace)
        except ApiError as exc:
            raise ToolError(exc.message) from None
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        run.clients += 1
        run.subscribe(queue, 0)
        steps, total = 0, sum(vector) + len(vector)
        try:
            while (event := (await queue.get())[1]) != END:
                step = event[1] if event[0] == "progress" and isinstance(event[1], dict) else {}
                kind = str(step.get("type"))
                if kind == "round_finished" and step["round"] == len(vector):
                    kind = "answered"  # the final round's compaction
                if line := STEPS.get(kind):
                    steps += 1
                    await ctx.report_progress(steps, total, line.format(**step))
        finally:
            run.unsubscribe(queue)
            service.runs.detach(run, cancel=True)  # a cancelled call stops a run no one follows
        if run.error is not None or run.state is None:
            error = api_error(run.error or RuntimeError("the run left no state"))
            raise ToolError(redact(error.message, service.settings.secrets))
        record = record_of(run.state)
        summary = Summary(
            rounds=record["round_vector"],
            trajectories=len(record["trajectories"]),
            **{name: record[name] for name in ("ttc_tokens", "stopped", "failed")},
        )
        answer = TextContent(type="text", text=message_text(run.state["messages"][-1]))
        return CallToolResult(content=[answer], structuredContent=summary.model_dump())

    return server


class _Guarded:
    """An ASGI app: the session manager's requests, behind the service's API keys."""

    def __init__(self, service: Service, handle: Callable[[Scope, Receive, Send], Any]) -> None:
        self.service, self.handle = service, handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.service.authorize(Headers(scope=scope).get("authorization"))
        except ApiError as exc:
            await exc.response()(scope, receive, send)
        else:
            await self.handle(scope, receive, send)


def mcp_endpoint(
    service: Service,
) -> tuple[Route, Callable[[], contextlib.AbstractAsyncContextManager[None]]]:
    """The tool over streamable HTTP for `create_app`: the ``/mcp`` route, behind the
    service's API keys as ``/v1`` is, and what the app's lifespan runs (its sessions)."""
    server = create_mcp_server(service, host=service.settings.host)
    server.streamable_http_app()  # creates the session manager
    manager = server.session_manager
    return Route("/mcp", _Guarded(service, manager.handle_request)), manager.run


__all__ = ["DESCRIPTION", "Summary", "create_mcp_server", "mcp_endpoint"]
