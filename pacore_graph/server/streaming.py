"""``stream: true``: the run as server-sent events in OpenAI's chunk format.

- The first chunk of each choice is ``{"role": "assistant", "content": ""}``.
- The final round streams token by token: its answer as ``delta.content``, its thinking as
  ``delta.reasoning_content`` (split as the graph splits it).
- While the exploration rounds run, an SSE comment (``: keep-alive``) goes out whenever
  nothing else has for ``keepalive`` seconds, so proxies and load balancers keep the
  connection; with ``pacore: {"progress": true}`` progress lines go out as
  ``delta.reasoning_content`` too (round started, each trajectory, round finished).
- An answer that did not stream (a stored one, or a resumed run whose final round had
  finished) is sent whole, as one chunk.
- Each choice ends with a chunk carrying its ``finish_reason`` and its ``pacore`` report;
  with ``stream_options.include_usage`` a last chunk with no choices carries ``usage``.
- A failure after the stream began is an event whose data is an OpenAI error object.

Several events that are ready together go out in one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pacore_graph.server.completions import (
    DONE,
    KEEPALIVE,
    Completion,
    answer_of,
    error_event,
    run_report,
)
from pacore_graph.server.errors import api_error
from pacore_graph.server.requests import RunSpec
from pacore_graph.server.runs import Event, Run

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


async def sse_events(
    completion: Completion,
    spec: RunSpec,
    runs: Sequence[Run],
    queue: asyncio.Queue[tuple[int, Event]],
    *,
    keepalive_s: float,
    secrets: Sequence[str],
    on_close: Callable[[], None],
) -> AsyncIterator[bytes]:
    """The response body of a streamed request whose ``runs`` (one per choice) all send
    their events to ``queue``; ``on_close`` runs when the stream ends or the client leaves.
    """
    usage = spec.include_usage
    streamed: list[set[str | None]] = [set() for _ in runs]
    reports: list[dict[str, Any]] = [{} for _ in runs]
    open_choices = set(range(len(runs)))
    try:
        yield b"".join(
            completion.chunk(i, {"role": "assistant", "content": ""}, usage=usage)
            for i in range(len(runs))
        )
        while open_choices:
            try:
                async with asyncio.timeout(keepalive_s):
                    items = [await queue.get()]
            except TimeoutError:
                yield KEEPALIVE
                continue
            while not queue.empty():
                items.append(queue.get_nowait())
            out: list[bytes] = []
            for index, event in items:
                kind = event[0]
                if kind == "token":
                    _, content, reasoning, message_id = event
                    streamed[index].add(message_id)
                    delta: dict[str, str] = {}
                    if reasoning:
                        delta["reasoning_content"] = reasoning
                    if content:
                        delta["content"] = content
                    out.append(completion.chunk(index, delta, usage=usage))
                elif kind == "progress" and spec.progress:
                    if line := progress_line(event[1], len(spec.rounds)):
                        out.append(
                            completion.chunk(index, {"reasoning_content": line}, usage=usage)
                        )
                elif kind == "status" and spec.progress and event[1] in _STATUS_LINES:
                    line = f"[pacore] {_STATUS_LINES[event[1]]}\n"
                    out.append(completion.chunk(index, {"reasoning_content": line}, usage=usage))
                elif kind == "end":
                    run = runs[index]
                    if run.error is not None or run.state is None:
                        failure = api_error(run.error or RuntimeError("no answer"))
                        out.append(error_event(failure.body(secrets)))
                        yield b"".join(out)
                        return
                    content, reasoning, finish, message_id = answer_of(run.state)
                    if message_id not in streamed[index]:
                        whole: dict[str, str] = {"content": content}
                        if reasoning:
                            whole = {"reasoning_content": reasoning, **whole}
                        out.append(completion.chunk(index, whole, usage=usage))
                    reports[index] = run_report(run, index)
                    out.append(
                        completion.chunk(
                            index,
                            {},
                            finish or "stop",
                            usage=usage,
                            pacore={"runs": [reports[index]]},
                        )
                    )
                    open_choices.discard(index)
            if out:
                yield b"".join(out)
        if usage:
            yield completion.usage_chunk(reports)
        yield DONE
    finally:
        on_close()


__all__ = ["progress_line", "sse_events"]
