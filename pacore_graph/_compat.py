"""Every private LangGraph API pacore-graph uses, in one place; `tests/test_compat.py` fails
when an upgrade changes one of them.

- `RunnableCallable`: the sync + async node with ``runtime``/``config`` injection that
  LangGraph's own ``ToolNode`` is built on. The public ``RunnableLambda`` takes a sync
  and an async function too but injects no ``runtime``, and adds its own callback and
  signature work to every trajectory of a round's dispatch burst.
- `is_resuming`: LangGraph marks the first step of a run that resumes a thread with a
  configurable key; there is no public accessor. ``compact`` reads it so that a resumed
  round whose quorum failed retries its failed calls instead of failing again.
"""

from __future__ import annotations

from typing import Any

from langgraph._internal._constants import CONFIG_KEY_RESUMING
from langgraph._internal._runnable import RunnableCallable


def is_resuming(config: Any) -> bool:
    """True in the first step of a run that resumes a thread (``invoke(None, config)``)."""
    return bool((config or {}).get("configurable", {}).get(CONFIG_KEY_RESUMING))


__all__ = ["RunnableCallable", "is_resuming"]
