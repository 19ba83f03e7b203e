"""``stream: true``: the run as server-sent events in OpenAI's chunk format, sent by
sse-starlette's `EventSourceResponse` (the sequence of events: docs/serve.md).

Each choice opens with ``{"role": "assistant", "content": ""}``; the final round streams
token by token (``delta.content``, its thinking ``delta.reasoning_content``), an answer
that did not stream (a stored one) goes out whole; with ``pacore.progress`` progress
lines go out as ``reasoning_content``. Each choice ends with a chunk carrying its
``finish_reason`` and ``pacore`` report, then comes the ``usage`` chunk if asked, then
``[DONE]``; a failure after the stream began is an OpenAI error object, then ``[DONE]``.
An SSE comment (``: keep-alive``) goes out every ``keepalive_s`` seconds.
"""

from __future__ import annotations

import asyncio
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
    return EventSourceResponse(
        _events(completion, spec, runs, queue, settings.secrets, on_close),
        sep="\n",
        ping=settings.keepalive_s,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        shutdown_grace_period=settings.grace_s + SHUTDOWN_MARGIN_S,
    )


async def _events(
    completion: Completion,
    spec: RunSpec,
    runs: Sequence[Run],
    queue: asyncio.Queue[tuple[int, Event]],
    secrets: Sequence[str],
    on_close: Callable[[], None],
) -> AsyncIterator[str]:
    """The data of each event."""
    usage = spec.include_usage
    streamed: list[set[str | None]] = [set() for _ in runs]
    reports: list[dict[str, Any]] = [{} for _ in runs]
    open_choices = set(range(len(runs)))
    try:
        for index in range(len(runs)):
            yield completion.chunk(index, {"role": "assistant", "content": ""}, usage=usage)
        while open_choices:
            index, event = await queue.get()
            kind = event[0]
            if kind == "token":
                _, content, reasoning, message_id = event
                streamed[index].add(message_id)
                delta = {"reasoning_content": reasoning, "content": content}
                yield completion.chunk(index, {k: v for k, v in delta.items() if v}, usage=usage)
            elif kind == "progress" and spec.progress:
                if line := progress_line(event[1], len(spec.rounds)):
                    yield completion.chunk(index, {"reasoning_content": line}, usage=usage)
            elif kind == "status" and spec.progress and event[1] in _STATUS_LINES:
                line = f"[pacore] {_STATUS_LINES[event[1]]}\n"
                yield completion.chunk(index, {"reasoning_content": line}, usage=usage)
            elif kind == "end":
                run = runs[index]
                if run.error is not None or run.state is None:
                    yield dumps(api_error(run.error or RuntimeError("no answer")).body(secrets))
                    break
                content, reasoning, finish, message_id = answer_of(run.state)
                if message_id not in streamed[index]:
                    whole = {"reasoning_content": reasoning, "content": content}
                    yield completion.chunk(
                        index, {k: v for k, v in whole.items() if v is not None}, usage=usage
                    )
                reports[index] = run_report(run, index)
                pacore = {"runs": [reports[index]]}
                yield completion.chunk(index, {}, finish or "stop", usage=usage, pacore=pacore)
                open_choices.discard(index)
        else:
            if usage:
                yield completion.usage_chunk(reports)
        yield "[DONE]"
    finally:
        on_close()


__all__ = ["SHUTDOWN_MARGIN_S", "progress_line", "sse_response"]
