"""Runs a graph on a checkpointed thread: starts it, resumes it after a crash (only the
unfinished tasks run again), or reads back its answer. On a checkpointer with leases a run
holds its thread's lease from before it reads the thread until it ends."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import StateSnapshot, StreamMode

from pacore_graph.checkpoints.layout import LEASE_CONFIG_KEY
from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.errors import ThreadConflictError
from pacore_graph.messages import last_user_index, message_text
from pacore_graph.resume import check_same_run, run_settings
from pacore_graph.state import chat_messages

ThreadStatus = Literal["new", "interrupted", "finished"]
StatusRule = Callable[[StateSnapshot, Mapping[str, Any]], ThreadStatus]


def thread_status(snapshot: StateSnapshot, input: Mapping[str, Any]) -> ThreadStatus:
    """What a PaCoRe thread's latest checkpoint means for a run of ``input["messages"]``:
    "interrupted" (this problem's run stopped half way), "finished" (answered) or "new";
    ThreadConflictError when it holds an unfinished run of another problem."""
    stored = snapshot.values.get("messages") or []
    asked = [m for m in stored if isinstance(m, HumanMessage)]
    chat = chat_messages(input["messages"])  # ("user", "...") tuples and dicts too
    problem = message_text(chat[last_user_index(chat)])
    # A step whose task writes are all stored but whose checkpoint is not has no `next`
    # (LangGraph leaves tasks with writes out of it), only `tasks`: it is half way too.
    if snapshot.next or snapshot.tasks:
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
    graph: Pregel[Any, Any, Any, Any], snapshot: StateSnapshot, status: ThreadStatus, context: Any
) -> ThreadStatus:
    """Holds a PaCoRe thread to its run's settings: an unfinished run resumes only under them
    (else ThreadConflictError); an answer given under others makes the status "new"."""
    defaults = getattr(getattr(graph, "builder", None), "defaults", None)
    stored = snapshot.values.get("settings")
    if status == "new" or not isinstance(defaults, PaCoReContext) or stored is None:
        return status
    settings = merge_context(defaults, context)
    if status == "interrupted":
        check_same_run(stored, settings)
        return status
    return status if stored == run_settings(settings) else "new"


@contextlib.asynccontextmanager
async def thread_lease(
    graph: Pregel[Any, Any, Any, Any],
    config: RunnableConfig,
    *,
    wait: bool | float = False,
    on_wait: Callable[[str], None] | None = None,
) -> AsyncIterator[RunnableConfig]:
    """Holds the thread of ``config`` for one run; yields the config to run it with, which
    on a checkpointer with leases carries the lease's token that fences every write.
    ``wait`` is `arun_thread`'s; ``on_wait`` is told who holds the thread. ThreadBusyError
    when another run holds it; LeaseLostError when the lease is lost (the block cancelled)."""
    conf = config.get("configurable", {})
    alease = getattr(graph.checkpointer, "alease", None)
    if (
        alease is None
        or getattr(graph.checkpointer, "lease_ttl", None) is None
        or "thread_id" not in conf
        or LEASE_CONFIG_KEY in conf
    ):
        yield config
        return
    async with alease(str(conf["thread_id"]), wait=wait, on_wait=on_wait) as held:
        yield held.bind(config)


async def arun_thread(
    graph: Pregel[Any, Any, Any, Any],
    input: Mapping[str, Any],
    config: RunnableConfig,
    *,
    status_rule: StatusRule = thread_status,
    on_status: Callable[[ThreadStatus], None] | None = None,
    on_event: Callable[[Any], None] | None = None,
    on_update: Callable[[Mapping[str, Any]], None] | None = None,
    wait: bool | float = False,
    on_message: Callable[[Any, dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> tuple[ThreadStatus, dict[str, Any]]:
    """Runs, resumes or reads back the thread in ``config["configurable"]["thread_id"]``
    (without one, or a checkpointer, a plain run), under its lease (`thread_lease`); returns
    how the thread was found, and its final state.

    Args:
        status_rule: What a checkpoint means for ``input``; PaCoRe's by default.
        on_status: Told how the thread was found, before anything runs.
        on_event: Each ``get_stream_writer()`` event of the run (progress).
        on_update: Each node's update as the node finishes, before it is saved.
        wait: When another run holds the thread: False raises `ThreadBusyError`, True
            waits for it to end, seconds wait at most that long.
        on_message: Each ``stream_mode="messages"`` chunk and its metadata.
        **kwargs: Passed to ``astream``; ``durability`` defaults to "sync" on a thread.

    Raises:
        ThreadConflictError: The thread holds an unfinished run of another input, or one
            started with other settings.
        ThreadBusyError: Another run holds the thread.
        LeaseLostError: This run lost its lease midway; none of its writes landed since.
    """
    async with thread_lease(graph, config, wait=wait) as config:
        threaded = graph.checkpointer is not None and "thread_id" in config.get("configurable", {})
        snapshot = await graph.aget_state(config) if threaded else None
        status: ThreadStatus = "new"
        if snapshot is not None:
            found = status_rule(snapshot, input)
            status = _same_settings(graph, snapshot, found, kwargs.get("context"))
        if on_status is not None:
            on_status(status)
        if status == "finished" and snapshot is not None:
            return status, dict(snapshot.values)
        kwargs.setdefault("durability", "sync" if threaded else None)
        state: dict[str, Any] = {}
        handlers: dict[StreamMode, Callable[..., None] | None] = {
            "custom": on_event,
            "updates": on_update,
            "messages": on_message,
        }
        # "custom" always: it makes LangGraph stream eagerly, so each update reaches on_update
        # as its task ends, before the step's writes are saved (an answer whose save fails
        # is still shown).
        modes: list[StreamMode] = ["values", "custom"]
        modes += [m for m, h in handlers.items() if h and m != "custom"]
        command = kwargs.pop("command", None)  # e.g. Command(resume=...) for a paused run
        run_input = command if status == "interrupted" else dict(input)
        async for mode, chunk in graph.astream(run_input, config, stream_mode=modes, **kwargs):
            if mode == "values":
                state = chunk
            elif (handler := handlers[mode]) is not None:
                handler(*chunk) if mode == "messages" else handler(chunk)
        return status, state


def default_thread_id(messages: Sequence[BaseMessage], settings: Mapping[str, Any]) -> str:
    """A thread id derived from the chat and the run's settings (its ``context``)."""
    key = json.dumps(
        [[[m.type, message_text(m)] for m in messages], sorted(settings.items())],
        ensure_ascii=False,
        default=repr,
    )
    return "pacore-" + hashlib.sha256(key.encode()).hexdigest()[:16]
