"""The server's runs: each request's PaCoRe run executes as a background task, so a client
that hangs up does not cancel it; a retry with the same Idempotency-Key attaches to it
(its stream replayed from the start). With Redis such a request is a thread (`thread_id_for`)
started, resumed on any instance, or answered from storage. At most ``max_runs`` execute."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import time
import uuid
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import StateSnapshot

from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.resume import run_settings
from pacore_graph.server.errors import ApiError, IdempotencyConflictError, RunCancelledError
from pacore_graph.server.metrics import Metrics
from pacore_graph.server.requests import RunSpec, fingerprint
from pacore_graph.server.settings import ServeSettings
from pacore_graph.threads import StatusRule, ThreadStatus, arun_thread, thread_status

logger = logging.getLogger("pacore.serve")

Event = tuple[Any, ...]
"""``("status", ThreadStatus)``, ``("progress", event)``,
``("token", content, reasoning, message_id)`` or ``("end",)``."""
END: Event = ("end",)


IDEMPOTENCY_KEY_MAX = 255
KEY_REUSED = (
    "this Idempotency-Key was used with another request (other messages or settings): use a "
    "new key for a new request"
)


def thread_id_for(idempotency_key: str, namespace: str = "", index: int = 0) -> str:
    """The thread of a request's choice ``index``: a digest, so any key is a safe Redis hash
    tag, and keys of different callers (``namespace``, from their API key) never meet."""
    text = f"{namespace}\0{idempotency_key}\0{index}"
    return "pacore-serve-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def same_request(spec: RunSpec, defaults: PaCoReContext) -> StatusRule:
    """PaCoRe's thread rule, plus: a thread holding another request (other messages or
    settings) is not this request's, whatever its state.

    Raises (from the rule):
        IdempotencyConflictError: The key was used with another request.
    """
    settings = run_settings(merge_context(defaults, spec.context))
    want = fingerprint(spec.messages, {})

    def rule(snapshot: StateSnapshot, input: Any) -> ThreadStatus:
        stored = list(snapshot.values.get("messages") or [])
        if stored:
            if not snapshot.next and isinstance(stored[-1], AIMessage):
                stored = stored[:-1]  # the answer
            before = snapshot.values.get("settings")
            if fingerprint(stored, {}) != want or (before is not None and before != settings):
                raise IdempotencyConflictError(KEY_REUSED)
        return thread_status(snapshot, input)

    return rule


class Run:
    """One PaCoRe run and the clients following it, with its events kept for late joiners."""

    def __init__(self, key: str, spec: RunSpec, thread_id: str | None, *, stream: bool) -> None:
        self.key = key
        self.spec = spec
        self.thread_id = thread_id
        self.stream = stream
        """Stream the final round's tokens."""
        self.status: ThreadStatus | None = None
        self.events: list[Event] = []
        self.listeners: list[tuple[asyncio.Queue[tuple[int, Event]], int]] = []
        self.clients = 0
        self.started = asyncio.Event()
        """Set once the run got past its input checks (or ended): errors before it are an
        HTTP status, errors after it go into the stream."""
        self.ended = asyncio.Event()
        self.state: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.began = time.monotonic()
        self.seconds: float | None = None
        """Wall time, once ended."""

    def emit(self, event: Event) -> None:
        """Keeps ``event`` and hands it to every listener."""
        self.events.append(event)
        for queue, index in self.listeners:
            queue.put_nowait((index, event))

    def on_status(self, status: ThreadStatus) -> None:
        self.status = status
        self.emit(("status", status))
        if status != "new":  # a new run's input is checked by its first node
            self.started.set()

    def on_event(self, event: Any) -> None:
        self.started.set()
        self.emit(("progress", event))

    def on_message(self, chunk: Any, metadata: dict[str, Any]) -> None:
        content = chunk.content if isinstance(chunk.content, str) else ""
        reasoning = chunk.additional_kwargs.get("reasoning_content") or ""
        if content or reasoning:
            self.emit(("token", content, reasoning, chunk.id))

    def finish(self, state: dict[str, Any] | None, error: BaseException | None) -> None:
        self.state, self.error = state, error
        self.seconds = time.monotonic() - self.began
        self.started.set()
        self.ended.set()
        self.emit(END)

    def subscribe(self, queue: asyncio.Queue[tuple[int, Event]], index: int) -> None:
        """Sends ``queue`` every event so far, then each new one, tagged with ``index``."""
        for event in self.events:
            queue.put_nowait((index, event))
        self.listeners.append((queue, index))

    def unsubscribe(self, queue: asyncio.Queue[tuple[int, Event]]) -> None:
        self.listeners = [(q, i) for q, i in self.listeners if q is not queue]


class Runs:
    """Every run of the server: started, attached to, executed, counted."""

    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.graph: Pregel[Any, Any, Any, Any] | None = None
        """The graph without a checkpointer: runs without an Idempotency-Key."""
        self.durable: Pregel[Any, Any, Any, Any] | None = None
        """The graph on the Redis checkpointer; None without Redis."""
        self.defaults = PaCoReContext()
        self.active: dict[str, Run] = {}
        self.kept: dict[str, tuple[Run, float]] = {}
        """Without Redis: finished runs whose key a retry may still name, until a deadline."""

    def executing(self) -> int:
        return len(self.active)

    def claim(self, spec: RunSpec, idempotency_key: str | None, namespace: str) -> list[Run]:
        """The runs answering ``spec``'s ``n`` choices: running ones its key names, and new
        ones started in the background.

        Raises:
            IdempotencyConflictError: The key names a run of another request.
            ApiError: 429 when the new runs would exceed ``max_runs``.
        """
        now = time.monotonic()
        self.kept = {k: v for k, v in self.kept.items() if v[1] > now}
        durable = idempotency_key is not None and self.durable is not None
        keys = [
            f"anonymous-{uuid.uuid4().hex}"
            if idempotency_key is None
            else thread_id_for(idempotency_key, namespace, index)
            for index in range(spec.n)
        ]
        found = [self.active.get(key) or self.kept.get(key, (None, 0.0))[0] for key in keys]
        if any(run is not None and run.spec.fingerprint != spec.fingerprint for run in found):
            raise IdempotencyConflictError(KEY_REUSED)
        new = found.count(None)
        if new and self.executing() + new > self.settings.max_runs:
            raise ApiError(
                429,
                f"{self.executing()} PaCoRe runs are executing, the most this server runs at "
                f"once (--max-runs {self.settings.max_runs}); retry later",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        return [
            run or self._start(Run(key, spec, key if durable else None, stream=spec.stream))
            for key, run in zip(keys, found, strict=True)
        ]

    def _start(self, run: Run) -> Run:
        self.active[run.key] = run
        self.metrics.runs_in_flight.inc()
        # A context of its own: the run outlives the request that started it, and must not
        # inherit what a server put in the request's context (LangGraph's server does).
        run.task = asyncio.get_running_loop().create_task(
            self._execute(run), context=contextvars.Context()
        )
        return run

    async def _execute(self, run: Run) -> None:
        outcome = "error"
        try:
            graph = self.durable if run.thread_id else self.graph
            if graph is None:
                raise RuntimeError("the server has not started its graph")
            config: RunnableConfig = {"callbacks": [self.metrics.watcher]}
            if self.settings.concurrency:
                config["max_concurrency"] = self.settings.concurrency
            kwargs: dict[str, Any] = {}
            if run.thread_id:
                config["configurable"] = {"thread_id": run.thread_id}
                # One writer per thread across instances: wait for the one holding it.
                kwargs = {"status_rule": same_request(run.spec, self.defaults), "wait": True}

            def on_event(event: Any) -> None:
                self.metrics.on_event(event)
                run.on_event(event)

            _, state = await arun_thread(
                graph,
                {"messages": run.spec.messages},
                config,
                context=run.spec.context,
                on_status=run.on_status,
                on_event=on_event,
                on_message=run.on_message if run.stream else None,
                **kwargs,
            )
            run.finish(state, None)
            outcome = "ok"
        except asyncio.CancelledError:
            run.finish(None, RunCancelledError("the run was cancelled"))
            outcome = "cancelled"
            raise
        except Exception as exc:
            run.finish(None, exc)
            if not isinstance(exc, ApiError):
                logger.info("run %s failed: %s: %s", run.key, type(exc).__name__, exc)
        finally:
            self.active.pop(run.key, None)
            self.metrics.runs_in_flight.dec()
            self.metrics.runs.labels(outcome).inc()
            self.metrics.run_seconds.observe(run.seconds or 0.0)
            # Without Redis, a retry of its key finds the answer here for a while.
            if outcome == "ok" and run.thread_id is None and not run.key.startswith("anonymous"):
                self.kept[run.key] = (run, time.monotonic() + self.settings.finished_ttl_s)

    def detach(self, run: Run, *, cancel: bool | None = None) -> None:
        """A client stopped following ``run``; with ``cancel`` (default: ``cancel_on_disconnect``)
        the last one leaving cancels it."""
        run.clients -= 1
        cancel = self.settings.cancel_on_disconnect if cancel is None else cancel
        if run.clients <= 0 and cancel and not run.ended.is_set() and run.task is not None:
            run.task.cancel()

    async def cancel_all(self) -> None:
        """Cancels every run (at shutdown) and waits for them to stop."""
        runs = list(self.active.values())
        for run in runs:
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in runs if r.task is not None), return_exceptions=True)
        for run in runs:  # a task cancelled before it began never ran its own clean-up
            if not run.ended.is_set():
                run.finish(None, RunCancelledError("the server is shutting down"))
            if self.active.pop(run.key, None) is not None:
                self.metrics.runs_in_flight.dec()


def idempotency_key(value: str | None) -> str | None:
    """The request's Idempotency-Key header, checked.

    Raises:
        ApiError: 400 when it is empty, too long or not printable ASCII.
    """
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isascii() or not key.isprintable():
        raise ApiError(
            400,
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters",
            code="invalid_idempotency_key",
        )
    return key


__all__ = ["END", "Event", "Run", "Runs", "idempotency_key", "same_request", "thread_id_for"]
