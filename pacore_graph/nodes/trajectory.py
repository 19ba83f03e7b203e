"""``trajectory``: one model call, one Send task, so each has its own retry, checkpoint write
and stream."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, NotRequired

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.constants import TAG_NOSTREAM
from langgraph.errors import GraphBubbleUp
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy
from typing_extensions import TypedDict

from pacore_graph._compat import RunnableCallable
from pacore_graph.budget import BudgetTracker, RoundBudget, tracker_for
from pacore_graph.compaction import resolve_compaction
from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.retry import DEFAULT_RETRY_POLICY, describe_failure, final_attempt, retry_after
from pacore_graph.secrets import model_secrets, redact
from pacore_graph.trajectories import (
    Status,
    Trajectory,
    finished_record,
    output_tokens,
    unfinished_record,
)


class TrajectoryTask(TypedDict):
    """The payload of one ``Send``: every task of a round gets the same ``messages`` list."""

    messages: list[BaseMessage]
    round: int
    index: int
    final: bool
    budget: NotRequired[RoundBudget | None]
    """The round's share of the run's budgets; None in the final round, which is never cut."""


def _call_in_thread(call: Callable[[], Any], tracker: BudgetTracker) -> tuple[bool, Any]:
    """Runs a blocking call until it returns or the budget runs out: (returned, result).

    A blocking HTTP call cannot be interrupted, so when the budget wins the call is left
    to finish on its daemon thread and its result is dropped; the async API cancels it.
    """
    if tracker.check():
        return False, None
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            result.set_result(context.run(call))
        except BaseException as exc:  # handed to the caller, who decides
            result.set_exception(exc)

    wake = threading.Event()
    result.add_done_callback(lambda _: wake.set())
    unsubscribe = tracker.on_exhausted(wake.set)
    threading.Thread(target=work, name="pacore-trajectory", daemon=True).start()
    try:
        wake.wait(tracker.seconds_left())
    finally:
        unsubscribe()
    if result.done():
        return True, result.result()
    tracker.check()
    return False, None


async def _call_async(call: Callable[[], Any], tracker: BudgetTracker) -> tuple[bool, Any]:
    """Awaits a model call until it returns or the budget runs out, cancelling it then."""
    if tracker.check():
        return False, None
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(call())
    stop: asyncio.Future[None] = loop.create_future()

    def set_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    def wake() -> None:
        loop.call_soon_threadsafe(set_stop)

    unsubscribe = tracker.on_exhausted(wake)
    try:
        await asyncio.wait(
            {task, stop}, timeout=tracker.seconds_left(), return_when="FIRST_COMPLETED"
        )
        if task.done():
            return True, task.result()
        tracker.check()
        return False, None
    finally:
        unsubscribe()
        stop.cancel()
        if not task.done():  # the budget ran out, or this node itself was cancelled
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class _Call(NamedTuple):
    """What one attempt sends, and the round's budget tracker (None without budgets)."""

    messages: list[BaseMessage]
    config: RunnableConfig
    kwargs: dict[str, Any]
    tracker: BudgetTracker | None


class TrajectoryNode:
    """The trajectory node: one model call per ``Send`` task, sync (`run`) and async (`arun`)
    over shared helpers, as LangGraph's ``ToolNode`` is built.

    A failure that a retry can fix is raised, so the node's ``RetryPolicy`` tries again
    (after the server's ``Retry-After``, when it sent one). A failure that cannot be
    fixed, or the last attempt's, is recorded as a ``failed`` trajectory instead of
    raised: raising would make LangGraph cancel the round's other calls, and the
    ``compact`` node decides whether enough of the round finished.
    """

    def __init__(
        self,
        model: BaseChatModel,
        defaults: PaCoReContext,
        retry_policy: RetryPolicy | None = DEFAULT_RETRY_POLICY,
    ) -> None:
        self.model = model
        self.defaults = defaults
        self.retry_policy = retry_policy
        self.secrets = model_secrets(model)

    def as_runnable(self) -> Runnable:
        """The node as LangGraph runs it: `run` under ``invoke``, `arun` under ``ainvoke``."""
        # trace=False: the graph already traces the node's task; this would nest a copy.
        return RunnableCallable(self.run, self.arun, name="trajectory", trace=False)

    def run(
        self, task: TrajectoryTask, runtime: Runtime[PaCoReContext], config: RunnableConfig
    ) -> dict[str, list[Trajectory]]:
        """One call of the task's trajectory (sync)."""
        started = time.perf_counter()
        call = self._call(task, runtime, config)
        invoke = functools.partial(self.model.invoke, call.messages, call.config, **call.kwargs)
        try:
            returned, message = (
                (True, invoke()) if call.tracker is None else _call_in_thread(invoke, call.tracker)
            )
        except Exception as exc:
            outcome = self._on_failure(task, runtime, exc, started)
            if isinstance(outcome, dict):
                return outcome
            time.sleep(outcome)
            raise
        return self._finish(task, runtime, returned, message, call.tracker, started)

    async def arun(
        self, task: TrajectoryTask, runtime: Runtime[PaCoReContext], config: RunnableConfig
    ) -> dict[str, list[Trajectory]]:
        """One call of the task's trajectory (async; a budget running out cancels it)."""
        started = time.perf_counter()
        call = self._call(task, runtime, config)
        invoke = functools.partial(self.model.ainvoke, call.messages, call.config, **call.kwargs)
        try:
            returned, message = (
                (True, await invoke())
                if call.tracker is None
                else await _call_async(invoke, call.tracker)
            )
        except Exception as exc:
            outcome = self._on_failure(task, runtime, exc, started)
            if isinstance(outcome, dict):
                return outcome
            await asyncio.sleep(outcome)
            raise
        return self._finish(task, runtime, returned, message, call.tracker, started)

    # -- shared helpers ----------------------------------------------------------------

    def _call(
        self, task: TrajectoryTask, runtime: Runtime[PaCoReContext], config: RunnableConfig
    ) -> _Call:
        settings = merge_context(self.defaults, runtime.context)
        # Only the final round's tokens stream to stream_mode="messages": K parallel
        # exploration streams interleaved would be noise.
        extra: RunnableConfig = {
            "metadata": {"pacore_round": task["round"], "pacore_index": task["index"]},
            "tags": [] if task["final"] else [TAG_NOSTREAM],
        }
        kwargs = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "extra_body": settings.extra_body,
        }
        budget = task.get("budget")
        return _Call(
            task["messages"],
            merge_configs(config, extra),
            {k: v for k, v in kwargs.items() if v is not None},
            tracker_for(budget) if budget else None,
        )

    def _finish(
        self,
        task: TrajectoryTask,
        runtime: Runtime[PaCoReContext],
        returned: bool,
        message: Any,
        tracker: BudgetTracker | None,
        started: float,
    ) -> dict[str, list[Trajectory]]:
        if not returned:
            reason = tracker.reason if tracker is not None else None
            return self._unfinished(task, runtime, "stopped", f"budget {reason} ran out", started)
        if tracker is not None:
            tracker.add(output_tokens(message))
        settings = merge_context(self.defaults, runtime.context)
        traj = finished_record(
            task["round"],
            task["index"],
            message,
            compaction=resolve_compaction(settings.compaction or "reference"),
            latency_s=time.perf_counter() - started,
        )
        runtime.stream_writer(
            {
                "type": "trajectory_finished",
                "round": traj["round"],
                "index": traj["index"],
                "completion_tokens": traj["completion_tokens"],
                "finish_reason": traj["finish_reason"],
                "latency_s": traj["latency_s"],
            }
        )
        return {"trajectories": [traj]}

    def _unfinished(
        self,
        task: TrajectoryTask,
        runtime: Runtime[PaCoReContext],
        status: Status,
        error: str,
        started: float,
    ) -> dict[str, list[Trajectory]]:
        error = redact(error, self.secrets)
        traj = unfinished_record(
            task["round"], task["index"], status, error, latency_s=time.perf_counter() - started
        )
        runtime.stream_writer(
            {
                "type": f"trajectory_{status}",
                "round": task["round"],
                "index": task["index"],
                "error": error,
            }
        )
        return {"trajectories": [traj]}

    def _on_failure(
        self,
        task: TrajectoryTask,
        runtime: Runtime[PaCoReContext],
        exc: Exception,
        started: float,
    ) -> dict[str, list[Trajectory]] | float:
        """The failed record, or the seconds to wait before raising for a retry."""
        if isinstance(exc, GraphBubbleUp):  # interrupts and commands are not failures
            raise exc
        info = runtime.execution_info
        if final_attempt(self.retry_policy, exc, info.node_attempt if info else 1):
            return self._unfinished(task, runtime, "failed", describe_failure(exc), started)
        return retry_after(exc)
