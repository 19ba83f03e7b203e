"""``trajectory``: one model call per Send task, each with its own checkpoint write."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
import time
import traceback
from typing import Any, NamedTuple
from uuid import uuid4

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, LLMResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs, var_child_runnable_config
from langgraph.constants import TAG_NOSTREAM
from langgraph.errors import GraphBubbleUp
from langgraph.graph.message import push_message
from langgraph.runtime import Runtime
from langgraph.types import Command, RetryPolicy
from typing_extensions import TypedDict

from pacore_graph._compat import read_channel
from pacore_graph.budget import BudgetTracker, RoundBudget, RoundTrackers, quorum
from pacore_graph.compaction import resolve_compaction
from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.messages import RoundPrompts, message_text
from pacore_graph.resume import check_same_run
from pacore_graph.retry import DEFAULT_RETRY_POLICY, describe_failure, retry_wait
from pacore_graph.rounds import resolve_rounds
from pacore_graph.secrets import model_secrets, redact
from pacore_graph.stragglers import StragglerPolicy, straggler_policy, trigger_count
from pacore_graph.trajectories import (
    Status,
    ThinkingSplitter,
    Trajectory,
    finished_record,
    output_tokens,
    reasoning_of,
    unfinished_record,
)


class TrajectoryTask(TypedDict):
    """The payload of one ``Send``; the node reads the round's prompt from the state."""

    round: int
    index: int
    final: bool
    budget: RoundBudget | None
    """The round's share of the run's budgets; None in the final round, which is never cut."""
    settings: str
    """`settings_key` of the run's settings: a resumed task runs only under them."""
    compact: bool
    """True for one task of the round, which sends the graph on to compact."""


Update = Command | dict[str, list[Trajectory]]
"""What the node returns: its trajectory's record, and for one task of a round the way on."""


def then_compact(task: TrajectoryTask, update: dict[str, list[Trajectory]]) -> Update:
    """The update, with ``goto="compact"`` from one task of the round only: the others leave
    one write each instead of two (LangGraph rescans a step's writes per finished task)."""
    return Command(update=update, goto="compact") if task["compact"] else update


class _AnswerStream(BaseCallbackHandler):
    """Streams the final round's reply to ``stream_mode="messages"`` split into answer and
    thinking, under the answer message's id, with ``push_message``, which no tracer sees."""

    run_inline = True  # in order, in the call's context, where push_message finds its config

    def __init__(self, message_id: str, config: RunnableConfig) -> None:
        self.message_id = message_id
        self.config = config
        self.splitter = ThinkingSplitter.after(read_channel(config, "trajectories"))

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        if isinstance(chunk := kwargs.get("chunk"), ChatGenerationChunk):
            message = chunk.message
            self._push(*self.splitter.feed(message_text(message), reasoning_of(message)))

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self._push(*self.splitter.close())

    def _push(self, content: str, reasoning: str) -> None:
        if not content and not reasoning:
            return
        chunk = AIMessageChunk(
            content=content,
            id=self.message_id,
            additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
        )
        # push_message reads the running config: the call's, so chunks carry pacore_round.
        token = var_child_runnable_config.set(self.config)
        try:
            push_message(chunk, state_key=None)
        finally:
            var_child_runnable_config.reset(token)


class ModelCall(NamedTuple):
    """One attempt (``tracker``: None without budgets or stragglers; ``message_id``: final only)."""

    task: TrajectoryTask
    runtime: Runtime[PaCoReContext]
    started: float
    settings: PaCoReContext
    messages: list[BaseMessage]
    config: RunnableConfig
    kwargs: dict[str, Any]
    tracker: BudgetTracker | None
    message_id: str | None


def _call_in_thread(model: BaseChatModel, call: ModelCall) -> tuple[bool, Any]:
    """(returned, reply) of ``model.invoke``, or (False, None) once the call's tracker stops
    the round; a stopped call finishes on its daemon thread and its reply is dropped."""
    tracker = call.tracker
    if tracker is None:
        return True, model.invoke(call.messages, call.config, **call.kwargs)
    if tracker.check():
        return False, None
    result: concurrent.futures.Future[Any] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            result.set_result(context.run(model.invoke, call.messages, call.config, **call.kwargs))
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
    tracker.expired()
    return False, None


async def _call_async(model: BaseChatModel, call: ModelCall) -> tuple[bool, Any]:
    """(returned, reply) of ``model.ainvoke``, cancelled once the call's tracker stops it."""
    tracker = call.tracker
    if tracker is None:
        return True, await model.ainvoke(call.messages, call.config, **call.kwargs)
    if tracker.check():
        return False, None
    loop = asyncio.get_running_loop()
    task: asyncio.Future[Any] = asyncio.ensure_future(
        model.ainvoke(call.messages, call.config, **call.kwargs)
    )
    stop: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        loop.call_soon_threadsafe(lambda: None if stop.done() else stop.set_result(None))

    unsubscribe = tracker.on_exhausted(wake)
    try:
        await asyncio.wait(
            {task, stop}, timeout=tracker.seconds_left(), return_when="FIRST_COMPLETED"
        )
        if task.done():
            return True, task.result()
        tracker.expired()
        return False, None
    finally:
        unsubscribe()
        stop.cancel()
        if not task.done():  # the budget ran out, or this node itself was cancelled
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _clear_frames(exc: BaseException | None) -> None:
    """Clears the finished frames in the tracebacks of ``exc`` and its causes: their locals
    hold it (LangChain's ``agenerate`` in a list), cycles only a full collection frees."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


class TrajectoryNode:
    """One model call per ``Send`` task, keeping what a round's tasks share. It retries
    itself to honour ``Retry-After``, and records a call that fails for good rather than
    raising, which would cancel the round's other calls."""

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
        self.prompts = RoundPrompts()
        self.trackers = RoundTrackers()
        self._checked: tuple[object, str, PaCoReContext] | None = None

    def run(
        self, task: TrajectoryTask, runtime: Runtime[PaCoReContext], config: RunnableConfig
    ) -> Update:
        attempt = 0
        while True:
            attempt += 1
            call = self._call(task, runtime, config)
            try:
                returned, message = _call_in_thread(self.model, call)
            except Exception as exc:
                if (wait := self._retry_wait(exc, attempt)) is None:
                    return self._unfinished(call, "failed", describe_failure(exc))
                time.sleep(wait)
            else:
                return self._finish(call, returned, message)

    async def arun(
        self, task: TrajectoryTask, runtime: Runtime[PaCoReContext], config: RunnableConfig
    ) -> Update:
        attempt = 0
        while True:
            attempt += 1
            call = self._call(task, runtime, config)
            try:
                returned, message = await _call_async(self.model, call)
            except Exception as exc:
                if (wait := self._retry_wait(exc, attempt)) is None:
                    return self._unfinished(call, "failed", describe_failure(exc))
                await asyncio.sleep(wait)
            else:
                return self._finish(call, returned, message)

    def _settings(self, context: object, started: str) -> PaCoReContext:
        """The run's settings, checked against those it ``started`` with (`check_same_run`),
        reusing the last check: a run's context object is static, and its tasks share it."""
        last = self._checked
        if last is not None and last[0] is context and last[1] == started:
            return last[2]
        settings = merge_context(self.defaults, context)  # type: ignore[arg-type]
        check_same_run(started, settings)
        self._checked = (context, started, settings)
        return settings

    def _call(
        self, task: TrajectoryTask, runtime: Runtime[PaCoReContext], config: RunnableConfig
    ) -> ModelCall:
        started = time.perf_counter()
        settings = self._settings(runtime.context, task["settings"])
        round_number, index = task["round"], task["index"]
        # No call streams its own tokens: K interleaved explorations would be noise, and
        # the final round's reply streams split by `_AnswerStream`.
        extra: RunnableConfig = {
            "run_name": f"pacore round {round_number} · trajectory {index}",
            "metadata": {"pacore_round": round_number, "pacore_index": index},
            "tags": [TAG_NOSTREAM],
        }
        config = merge_configs(config, extra)
        message_id = None
        if task["final"]:
            # A new id per attempt: a failed attempt's partial stream is another message.
            message_id = str(uuid4())
            config = merge_configs(config, {"callbacks": [_AnswerStream(message_id, config)]})
        kwargs = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "extra_body": settings.extra_body,
            # stream_mode="messages" would make LangChain stream every call.
            "stream": None if task["final"] else False,
        }

        def stragglers() -> tuple[StragglerPolicy, int, int] | None:
            policy = straggler_policy(
                settings.straggler_quantile,
                settings.straggler_factor,
                settings.straggler_min_seconds,
            )
            if policy is None:
                return None
            k = resolve_rounds(settings.rounds or "low")[round_number - 1]
            return policy, k, trigger_count(policy, k, quorum(settings.min_success, k))

        # Built by the first of the round's K tasks, the same list for the others.
        prompt = self.prompts.get(
            read_channel(config, "messages"), read_channel(config, "references")
        )
        args = {k: v for k, v in kwargs.items() if v is not None}
        tracker = self.trackers.get(task["budget"], stragglers) if task["budget"] else None
        return ModelCall(
            task, runtime, started, settings, prompt, config, args, tracker, message_id
        )

    def _retry_wait(self, exc: Exception, attempt: int) -> float | None:
        """Seconds to wait before the next attempt; None when the call failed for good."""
        if isinstance(exc, GraphBubbleUp):  # interrupts and commands are no failures
            raise exc
        _clear_frames(exc)
        return retry_wait(self.retry_policy, exc, attempt)

    def _finish(self, call: ModelCall, returned: bool, message: Any) -> Update:
        tracker = call.tracker
        if not returned:
            error = tracker.error if tracker is not None else None
            return self._unfinished(call, "stopped", error or "stopped")
        if tracker is not None:
            tracker.finished(output_tokens(message))
        traj = finished_record(
            call.task["round"],
            call.task["index"],
            message,
            compaction=resolve_compaction(call.settings.compaction or "reference"),
            latency_s=time.perf_counter() - call.started,
            message_id=call.message_id,
        )
        fields = ("round", "index", "completion_tokens", "finish_reason", "latency_s")
        event = {f: traj[f] for f in fields}  # type: ignore[literal-required]
        call.runtime.stream_writer({"type": "trajectory_finished", **event})
        return then_compact(call.task, {"trajectories": [traj]})

    def _unfinished(self, call: ModelCall, status: Status, error: str) -> Update:
        error = redact(error, self.secrets)
        r, i = call.task["round"], call.task["index"]
        traj = unfinished_record(r, i, status, error, latency_s=time.perf_counter() - call.started)
        event = {"type": f"trajectory_{status}", "round": r, "index": i, "error": error}
        call.runtime.stream_writer(event)
        return then_compact(call.task, {"trajectories": [traj]})
