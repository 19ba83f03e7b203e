"""Runs a graph on a checkpointed thread: starts it, resumes it after a crash, or reads back
its answer. The one runner behind ``pacore solve``, ``pacore eval`` and the web example.

A crash leaves the thread's last checkpoint with pending tasks, and the trajectories
that finished before it as pending writes. Resuming with ``None`` as input runs only
the unfinished tasks, so no finished trajectory is asked for again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import StateSnapshot, StreamMode

from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.errors import ThreadConflictError
from pacore_graph.messages import last_user_index, message_text
from pacore_graph.resume import check_same_run, run_settings

ThreadStatus = Literal["new", "interrupted", "finished"]
"""How a run found its thread: nothing to reuse, a run stopped half way, or answered."""

StatusRule = Callable[[StateSnapshot, Mapping[str, Any]], ThreadStatus]
"""What a thread's latest checkpoint means for a run of an input."""


def _problem(messages: Sequence[Any]) -> str:
    chat = convert_to_messages(messages)  # ("user", "...") tuples and dicts too, as the graph
    return message_text(chat[last_user_index(chat)])


def thread_status(snapshot: StateSnapshot, input: Mapping[str, Any]) -> ThreadStatus:
    """What a PaCoRe thread's latest checkpoint means for a run of ``input["messages"]``.

    "interrupted": a run of the same problem stopped half way (tasks pending);
    "finished": the thread already answered this problem; "new": start a run.

    Raises:
        ThreadConflictError: The thread holds an unfinished run of another problem.
    """
    stored = snapshot.values.get("messages") or []
    asked = [m for m in stored if isinstance(m, HumanMessage)]
    problem = _problem(input["messages"])
    if snapshot.next:
        if asked and message_text(asked[-1]) != problem:
            thread = snapshot.config.get("configurable", {}).get("thread_id")
            raise ThreadConflictError(
                f"thread {thread} holds an unfinished run of another question: resume it with "
                "the same input, or use a new thread id"
            )
        return "interrupted"
    answered = stored and isinstance(stored[-1], AIMessage) and snapshot.values.get("round_vector")
    return "finished" if answered and asked and message_text(asked[-1]) == problem else "new"


def _same_settings(
    graph: Pregel[Any, Any, Any, Any],
    snapshot: StateSnapshot,
    status: ThreadStatus,
    context: Any,
) -> ThreadStatus:
    """Holds a PaCoRe thread to its run's settings: an unfinished run resumes only under them
    (else ThreadConflictError, naming what differs), and an answer given under others is
    not handed back: the question runs again."""
    defaults = getattr(getattr(graph, "builder", None), "defaults", None)
    stored = snapshot.values.get("settings")
    if status == "new" or not isinstance(defaults, PaCoReContext) or stored is None:
        return status
    settings = merge_context(defaults, context)
    if status == "interrupted":
        check_same_run(stored, settings)
        return status
    return status if stored == run_settings(settings) else "new"


async def arun_thread(
    graph: Pregel[Any, Any, Any, Any],
    input: Mapping[str, Any],
    config: RunnableConfig,
    *,
    status_rule: StatusRule = thread_status,
    on_status: Callable[[ThreadStatus], None] | None = None,
    on_event: Callable[[Any], None] | None = None,
    on_message: Callable[[Any, dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> tuple[ThreadStatus, dict[str, Any]]:
    """Runs, resumes or reads back the thread in ``config["configurable"]["thread_id"]``.

    Without a thread id (or a checkpointer) it is a plain run.

    Args:
        graph: A compiled graph, with a checkpointer for threads.
        input: The run's input, e.g. ``{"messages": [...]}``.
        config: Run config; ``configurable.thread_id`` names the thread.
        status_rule: What a checkpoint means for ``input``; PaCoRe's by default.
        on_status: Told how the thread was found, before anything runs.
        on_event: Each ``get_stream_writer()`` event of the run (progress).
        on_message: Each ``stream_mode="messages"`` chunk and its metadata: the final
            round's reply as it streams (only that call streams from the model).
        **kwargs: Passed to ``astream`` (``context``, ``durability``, ...). ``durability``
            defaults to "sync" on a thread, so a crash loses only calls in flight.

    Returns:
        How the thread was found, and its final state.

    Raises:
        ThreadConflictError: The thread holds an unfinished run of another input, or one
            started with other settings (a PaCoRe graph's ``context`` and defaults).
    """
    threaded = graph.checkpointer is not None and "thread_id" in config.get("configurable", {})
    status: ThreadStatus = "new"
    snapshot = None
    if threaded:
        snapshot = await graph.aget_state(config)
        status = status_rule(snapshot, input)
        status = _same_settings(graph, snapshot, status, kwargs.get("context"))
    if on_status is not None:
        on_status(status)
    if status == "finished" and snapshot is not None:
        return status, dict(snapshot.values)
    kwargs.setdefault("durability", "sync" if threaded else None)
    state: dict[str, Any] = {}
    modes: list[StreamMode] = ["custom", "values"]
    if on_message is not None:
        modes.append("messages")
    async for mode, chunk in graph.astream(
        None if status == "interrupted" else dict(input),
        config,
        stream_mode=modes,
        **kwargs,
    ):
        if mode == "values":
            state = chunk
        elif mode == "custom":
            if on_event is not None:
                on_event(chunk)
        elif on_message is not None:
            on_message(*chunk)
    return status, state


def default_thread_id(messages: Sequence[BaseMessage], settings: Mapping[str, Any]) -> str:
    """A thread id derived from the chat and the run's settings (its ``context``), so the same
    command resumes its run and a changed setting starts another."""
    key = json.dumps(
        [[[m.type, message_text(m)] for m in messages], sorted(settings.items())],
        ensure_ascii=False,
        default=repr,
    )
    return "pacore-" + hashlib.sha256(key.encode()).hexdigest()[:16]


__all__ = ["StatusRule", "ThreadStatus", "arun_thread", "default_thread_id", "thread_status"]
