"""``stream: true``: the run as server-sent events in OpenAI's chunk format, sent by
sse-starlette's `EventSourceResponse` (the sequence of events: docs/serve.md): the final
round token by token, a stored answer whole, progress lines as ``reasoning_content`` with
``pacore.progress`` until the answer begins, a failure as an error object; ``: keep-alive``
every ``keepalive_s``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from pacore_graph.server.completions import Completion, answer_of, dumps, run_report
from pacore_graph.server.errors import api_error
from pacore_graph.server.requests import RunSpec
from pacore_graph.server.runs import Event, Run
from pacore_graph.server.settings import ServeSettings

SHUTDOWN_MARGIN_S = 2.0
"""At shutdown runs are cancelled after ``grace_s``; their streams get this much longer to
send the error event before they are cut."""

_STATUS_LINES = {
    "interrupted": "resuming the run: its finished trajectories are not asked again",
    "finished": "this request was answered before: sending the stored answer",
}


def progress_line(event: dict[str, Any], rounds: int) -> str:
    """One progress event (``stream_mode="custom"``) as a line of text, or ``""``."""
    kind = event.get("type")
    r = event.get("round")
    if kind == "round_started":
        k = event["k"]
        return f"[pacore] round {r}/{rounds}: {k} trajector{'y' if k == 1 else 'ies'}\n"
    if kind == "trajectory_finished":
        tokens = event.get("completion_tokens") or 0
        return f"[pacore] round {r} trajectory {event['index']}: finished, {tokens} tokens\n"
    if kind in ("trajectory_failed", "trajectory_stopped"):
        status = kind.removeprefix("trajectory_")
        return f"[pacore] round {r} trajectory {event['index']}: {status} ({event['error']})\n"
    if kind == "round_finished":
        k, failed, stopped = event["k"], event["failed"], event["stopped"]
        refs = event["references"]
        line = (
            f"[pacore] round {r} done: {k - failed - stopped}/{k} finished, "
            f"{event['completion_tokens']} tokens, {refs} reference{'' if refs == 1 else 's'}"
        )
        if event.get("budget_exhausted"):
            line += f"; budget {event['budget_exhausted']} ran out"
        return line + "\n"
    return ""


def sse_response(
    completion: Completion,
    spec: RunSpec,
    runs: Sequence[Run],
    queue: asyncio.Queue[tuple[int, Event]],
    settings: ServeSettings,
    on_close: Callable[[], None],
) -> EventSourceResponse:
    """The response of a streamed request whose ``runs`` (one per choice) all send their
    events to ``queue``; ``on_close`` runs when the stream ends or the client leaves."""

    async def events() -> AsyncIterator[str]:
        chunk = functools.partial(completion.chunk, usage=spec.include_usage)
        streamed: list[set[str | None]] = [set() for _ in runs]
        answering: set[int] = set()  # choices whose answer began
        reports: list[dict[str, Any]] = [{} for _ in runs]  # filled as each choice ends
        try:
            for index in range(len(runs)):
                yield chunk(index, {"role": "assistant", "content": ""})
            while not all(reports):
                index, event = await queue.get()
                kind = event[0]
                if kind == "token":
                    _, content, reasoning, message_id = event
                    streamed[index].add(message_id)
                    if content:
                        answering.add(index)
                    delta = {"reasoning_content": reasoning, "content": content}
                    yield chunk(index, {k: v for k, v in delta.items() if v})
                elif kind == "end":
                    run = runs[index]
                    if run.error is not None or run.state is None:
                        error = api_error(run.error or RuntimeError("no answer"))
                        yield dumps(error.body(settings.secrets))
                        break
                    content, reasoning, finish, message_id = answer_of(run.state)
                    if message_id not in streamed[index]:
                        whole = {"reasoning_content": reasoning, "content": content}
                        yield chunk(index, {k: v for k, v in whole.items() if v is not None})
                    reports[index] = run_report(run, index)
                    yield chunk(index, {}, finish or "stop", pacore={"runs": [reports[index]]})
                elif not spec.progress or index in answering:
                    continue  # progress is thinking: a client expects none after the answer
                elif kind == "progress":
                    if line := progress_line(event[1], len(spec.rounds)):
                        yield chunk(index, {"reasoning_content": line})
                elif kind == "status" and event[1] in _STATUS_LINES:
                    line = f"[pacore] {_STATUS_LINES[event[1]]}\n"
                    yield chunk(index, {"reasoning_content": line})
            else:
                if spec.include_usage:
                    yield completion.usage_chunk(reports)
            yield "[DONE]"
        finally:
            on_close()

    return EventSourceResponse(
        events(),
        sep="\n",
        ping=settings.keepalive_s,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        shutdown_grace_period=settings.grace_s + SHUTDOWN_MARGIN_S,
    )


__all__ = ["SHUTDOWN_MARGIN_S", "progress_line", "sse_response"]
