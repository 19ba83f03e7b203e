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
from typing import Any, NotRequired

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.config import merge_configs
from langgraph.config import get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from langgraph.errors import GraphBubbleUp
from langgraph.types import RetryPolicy
from typing_extensions import TypedDict

from pacore_graph.budget import BudgetTracker, RoundBudget, tracker_for
from pacore_graph.compaction import resolve_compaction
from pacore_graph.context import PaCoReContext
from pacore_graph.retry import DEFAULT_RETRY_POLICY, describe_failure, final_attempt, retry_after
from pacore_graph.secrets import model_secrets, redact
from pacore_graph.settings import run_settings
from pacore_graph.state import Trajectory
from pacore_graph.template import message_text


class TrajectoryTask(TypedDict):
    """The payload of one ``Send``: every task of a round gets the same ``messages`` list."""

    messages: list[AnyMessage]
    round: int
    index: int
    final: bool
    budget: NotRequired[RoundBudget | None]
    """The round's share of the run's budgets; None in the final round, which is never cut."""


def _reasoning(message: AIMessage) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = message.additional_kwargs.get(key)
        if isinstance(value, str) and value:
            return value
    if isinstance(message.content, list):
        parts = [
            b.get("reasoning") or b.get("thinking") or ""
            for b in message.content
            if isinstance(b, dict) and b.get("type") in ("reasoning", "thinking")
        ]
        return "".join(parts) or None
    return None


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
    stop = loop.create_future()

    def wake() -> None:
        loop.call_soon_threadsafe(lambda: stop.done() or stop.set_result(None))

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


def make_trajectory_node(
    model: BaseChatModel,
    defaults: PaCoReContext,
    retry_policy: RetryPolicy | None = DEFAULT_RETRY_POLICY,
) -> RunnableLambda:
    """The trajectory node, sync and async, calling ``model`` once per task.

    A failure that a retry can fix is raised, so the node's ``RetryPolicy`` tries again
    (after the server's ``Retry-After``, when it sent one). A failure that cannot be
    fixed, or the last attempt's, is recorded as a ``failed`` trajectory instead of
    raised: raising would make LangGraph cancel the round's other calls, and the
    ``compact`` node decides whether enough of the round finished.
    """
    secrets = model_secrets(model)

    def call_args(task: TrajectoryTask, config: RunnableConfig) -> tuple[RunnableConfig, dict]:
        settings = run_settings(defaults)
        # Only the final round's tokens stream to stream_mode="messages": K parallel
        # exploration streams interleaved would be noise.
        extra: RunnableConfig = {
            "metadata": {"pacore_round": task["round"], "pacore_index": task["index"]},
            "tags": [] if task["final"] else [TAG_NOSTREAM],
        }
        kwargs: dict[str, Any] = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "extra_body": settings.extra_body,
        }
        return merge_configs(config, extra), {k: v for k, v in kwargs.items() if v is not None}

    def record(task: TrajectoryTask, message: Any, started: float) -> dict[str, list[Trajectory]]:
        settings = run_settings(defaults)
        content = message_text(message)
        usage = getattr(message, "usage_metadata", None) or {}
        meta = message.response_metadata or {}
        finish = meta.get("finish_reason") or meta.get("stop_reason")
        traj = Trajectory(
            round=task["round"],
            index=task["index"],
            content=content,
            reasoning=_reasoning(message),
            message=resolve_compaction(settings.compaction)(content),  # type: ignore[arg-type]
            finish_reason=finish,
            truncated=finish in ("length", "max_tokens"),
            prompt_tokens=usage.get("input_tokens"),
            completion_tokens=usage.get("output_tokens"),
            latency_s=time.perf_counter() - started,
            status="finished",
            error=None,
        )
        get_stream_writer()(
            {
                "type": "trajectory_finished",
                "round": traj["round"],
                "index": traj["index"],
                "completion_tokens": traj["completion_tokens"],
                "finish_reason": finish,
                "latency_s": traj["latency_s"],
            }
        )
        return {"trajectories": [traj]}

    def unfinished(
        task: TrajectoryTask, status: str, error: str, started: float
    ) -> dict[str, list[Trajectory]]:
        error = redact(error, secrets)
        traj = Trajectory(
            round=task["round"],
            index=task["index"],
            content="",
            reasoning=None,
            message="",
            finish_reason=None,
            truncated=False,
            prompt_tokens=None,
            completion_tokens=None,
            latency_s=time.perf_counter() - started,
            status=status,  # type: ignore[typeddict-item]
            error=error,
        )
        get_stream_writer()(
            {
                "type": f"trajectory_{status}",
                "round": traj["round"],
                "index": traj["index"],
                "error": error,
            }
        )
        return {"trajectories": [traj]}

    def stopped(task: TrajectoryTask, tracker: BudgetTracker, started: float) -> dict:
        return unfinished(task, "stopped", f"budget {tracker.reason} ran out", started)

    def on_failure(task: TrajectoryTask, exc: Exception, started: float) -> dict | float:
        """The failed record, or the seconds to wait before raising for a retry."""
        if isinstance(exc, GraphBubbleUp):  # interrupts and commands are not failures
            raise exc
        if final_attempt(retry_policy, exc):
            return unfinished(task, "failed", describe_failure(exc), started)
        return retry_after(exc)

    def start(task: TrajectoryTask, config: RunnableConfig) -> tuple[Any, ...]:
        call_config, kwargs = call_args(task, config)
        budget = task.get("budget")
        return task["messages"], call_config, kwargs, tracker_for(budget) if budget else None

    def finish(
        task: TrajectoryTask,
        result: tuple[bool, Any],
        tracker: BudgetTracker | None,
        started: float,
    ) -> dict[str, list[Trajectory]]:
        returned, message = result
        if not returned:
            return stopped(task, tracker, started)  # type: ignore[arg-type]
        if tracker is not None:
            tracker.add((getattr(message, "usage_metadata", None) or {}).get("output_tokens") or 0)
        return record(task, message, started)

    def trajectory(task: TrajectoryTask, config: RunnableConfig) -> dict[str, list[Trajectory]]:
        started = time.perf_counter()
        messages, call_config, kwargs, tracker = start(task, config)
        call = functools.partial(model.invoke, messages, call_config, **kwargs)
        try:
            result = (True, call()) if tracker is None else _call_in_thread(call, tracker)
        except Exception as exc:
            outcome = on_failure(task, exc, started)
            if isinstance(outcome, dict):
                return outcome
            time.sleep(outcome)
            raise
        return finish(task, result, tracker, started)

    async def atrajectory(
        task: TrajectoryTask, config: RunnableConfig
    ) -> dict[str, list[Trajectory]]:
        started = time.perf_counter()
        messages, call_config, kwargs, tracker = start(task, config)
        call = functools.partial(model.ainvoke, messages, call_config, **kwargs)
        try:
            result = (True, await call()) if tracker is None else await _call_async(call, tracker)
        except Exception as exc:
            outcome = on_failure(task, exc, started)
            if isinstance(outcome, dict):
                return outcome
            await asyncio.sleep(outcome)
            raise
        return finish(task, result, tracker, started)

    return RunnableLambda(trajectory, afunc=atrajectory, name="trajectory")
