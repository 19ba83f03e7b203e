"""Every private LangGraph API pacore-graph uses, in one place; `tests/test_compat.py` fails
when an upgrade changes one of them.

- `RunnableCallable`: the sync + async node with ``runtime``/``config`` injection that
  LangGraph's own ``ToolNode`` is built on. The public ``RunnableLambda`` takes a sync
  and an async function too but injects no ``runtime``, and adds its own callback and
  signature work to every trajectory of a round's dispatch burst.
- `is_resuming`: LangGraph marks the first step of a run that resumes a thread with a
  configurable key; there is no public accessor. ``compact`` reads it so that a resumed
  round whose quorum failed retries its failed calls instead of failing again.
- `read_channel`: a ``Send`` task sees only its payload; LangGraph installs a reader of the
  graph's state in every task's config (its own ``ToolNode`` reads the state of a
  ``Send``-ed tool call through it). The trajectory node reads the round's prompt through
  it, so the prompt is stored once per round instead of once per trajectory's ``Send``.
"""

from __future__ import annotations

from typing import Any

from langgraph._internal._constants import CONF, CONFIG_KEY_READ, CONFIG_KEY_RESUMING
from langgraph._internal._runnable import RunnableCallable


def is_resuming(config: Any) -> bool:
    """True in the first step of a run that resumes a thread (``invoke(None, config)``)."""
    return bool((config or {}).get("configurable", {}).get(CONFIG_KEY_RESUMING))


def read_channel(config: Any, channel: str) -> Any:
    """The value of the state key ``channel`` as the running task's step sees it (None when
    it has none), from inside any task, a ``Send``'s included.

    Raises:
        RuntimeError: ``config`` is not a running LangGraph task's.
    """
    read = (config or {}).get(CONF, {}).get(CONFIG_KEY_READ)
    if read is None:
        raise RuntimeError(f"cannot read {channel!r}: not inside a running LangGraph task")
    return read(channel)


__all__ = ["RunnableCallable", "is_resuming", "read_channel"]
