"""Every private API of LangGraph and the openai SDK that pacore-graph uses, each with a
fallback, so that a rename upstream does not break ``import pacore_graph``;
`tests/test_compat.py` fails when an upgrade changes one."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langgraph.runtime import Runtime, get_runtime

try:
    from langgraph._internal._constants import CONF, CONFIG_KEY_READ, CONFIG_KEY_RESUMING
except ImportError:  # the keys' values in LangGraph 1.x
    CONF, CONFIG_KEY_READ = "configurable", "__pregel_read"
    CONFIG_KEY_RESUMING = "__pregel_resuming"

try:
    from langgraph._internal._runnable import RunnableCallable
except ImportError:
    RunnableCallable = None  # type: ignore[assignment,misc]


def sync_async_node(
    func: Callable[[Any, Runtime[Any], RunnableConfig], Any],
    afunc: Callable[[Any, Runtime[Any], RunnableConfig], Awaitable[Any]],
    name: str,
) -> Runnable:
    """A node that runs ``func`` under ``invoke`` and ``afunc`` under ``ainvoke``, each
    called as ``(input, runtime, config)``."""
    if RunnableCallable is not None:  # ToolNode's fast node: RunnableLambda adds callbacks
        # trace=False: the graph already traces the node's task; this would nest a copy.
        return RunnableCallable(func, afunc, name=name, trace=False)

    def run(input: Any, config: RunnableConfig) -> Any:
        return func(input, get_runtime(), config)

    async def arun(input: Any, config: RunnableConfig) -> Any:
        return await afunc(input, get_runtime(), config)

    return RunnableLambda(run, afunc=arun, name=name)


def is_resuming(config: Any) -> bool:
    """True in the first step of a run that resumes a thread (``invoke(None, config)``)."""
    return bool((config or {}).get(CONF, {}).get(CONFIG_KEY_RESUMING))


def read_channel(config: Any, channel: str) -> Any:
    """The state key ``channel`` as the running task's step sees it, a ``Send``'s included;
    RuntimeError outside a running task."""
    read = (config or {}).get(CONF, {}).get(CONFIG_KEY_READ)
    if read is None:
        raise RuntimeError(f"cannot read {channel!r}: not inside a running LangGraph task")
    return read(channel)


def expose_errors(types: type[BaseException] | tuple[type[BaseException], ...]) -> None:
    """Makes ``langgraph dev``'s server send its client the message of an error of ``types``
    (it sends "An internal error occurred" for types it does not know); a no-op without it."""
    with contextlib.suppress(ImportError):
        from langgraph_api import serde  # type: ignore[import-untyped]

        if hasattr(known := serde.default, "__wrapped__"):  # done already
            return

        def default(obj: Any) -> Any:
            if isinstance(obj, types):
                return {"error": type(obj).__name__, "message": str(obj)}
            return known(obj)

        default.__wrapped__ = known  # type: ignore[attr-defined]
        serde.default = default


__all__ = ["RunnableCallable", "expose_errors", "is_resuming", "read_channel", "sync_async_node"]


def sdk_status_error(client: Any, response: Any) -> Exception:
    """The openai SDK's exception for an HTTP error ``response`` (an httpx Response), built
    as ``client`` builds it (its class by status, the body's message); a plain
    ``APIStatusError`` naming the status if the client cannot."""
    make = getattr(client, "_make_status_error_from_response", None)
    if make is not None:
        return make(response)
    import openai

    message = f"Error code: {response.status_code}"
    return openai.APIStatusError(message, response=response, body=None)
