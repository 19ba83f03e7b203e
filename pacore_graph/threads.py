"""Run a problem on a checkpointed thread: start it, resume it after a crash, or return its answer.

A crash leaves the thread's last checkpoint with pending tasks, and the trajectories
that finished before it as pending writes. Resuming with ``None`` as input runs only
the unfinished tasks, so no finished trajectory is asked for again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.pregel import Pregel
from langgraph.types import StateSnapshot

from pacore_graph.template import last_user_index, message_text

ThreadStatus = Literal["new", "interrupted", "finished"]


def thread_status(snapshot: StateSnapshot, messages: Sequence[BaseMessage]) -> ThreadStatus:
    """What a thread's latest checkpoint means for a run of ``messages``.

    "interrupted": a run stopped half way (tasks pending); "finished": the thread
    already answered this same problem; "new": nothing to reuse, start a run.
    """
    if snapshot.next:
        return "interrupted"
    stored = snapshot.values.get("messages") or []
    if stored and isinstance(stored[-1], AIMessage) and snapshot.values.get("round_vector"):
        asked = [m for m in stored if isinstance(m, HumanMessage)]
        problem = message_text(messages[last_user_index(messages)])
        if asked and message_text(asked[-1]) == problem:
            return "finished"
    return "new"


async def arun_thread(
    graph: Pregel,
    messages: Sequence[BaseMessage],
    config: dict[str, Any],
    **kwargs: Any,
) -> tuple[ThreadStatus, dict[str, Any]]:
    """Runs, resumes or reads back the thread in ``config["configurable"]["thread_id"]``.

    Args:
        graph: A PaCoRe graph compiled with a checkpointer.
        messages: The conversation to answer.
        config: Run config with a ``thread_id``.
        **kwargs: Passed to ``ainvoke`` (``context``, ``durability``, ...).

    Returns:
        How the thread was found, and its final state.
    """
    snapshot = await graph.aget_state(config)
    status = thread_status(snapshot, messages)
    if status == "finished":
        return status, snapshot.values
    return status, await graph.ainvoke(run_input(status, messages), config, **kwargs)


def run_input(status: ThreadStatus, messages: Sequence[BaseMessage]) -> dict[str, Any] | None:
    """The graph input for a thread in ``status``: ``None`` resumes pending tasks."""
    return None if status == "interrupted" else {"messages": list(messages)}


def default_thread_id(messages: Sequence[BaseMessage], rounds: object) -> str:
    """A thread id derived from the problem and rounds, so the same command resumes its run."""
    key = json.dumps(
        [[m.type, message_text(m)] for m in messages] + [repr(rounds)], ensure_ascii=False
    )
    return "pacore-" + hashlib.sha256(key.encode()).hexdigest()[:16]
