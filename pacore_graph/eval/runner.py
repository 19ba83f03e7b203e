"""The eval run: settings x runs x problems, concurrently under one bound. Each (setting,
run, problem) is a thread with a deterministic id: a rerun on the same checkpointer reads
finished threads back without a model call, resumes interrupted ones and starts the rest.
PaCoRe settings run the PaCoRe graph; baselines and the first-round pool the sampling graph
(`pacore_graph.eval.samples`)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import Field

from pacore_graph.errors import PaCoReError
from pacore_graph.eval.dataset import Problem
from pacore_graph.eval.grading import (
    CROSS_CHECK_MARKERS,
    agreement,
    cross_checks,
    extract_answer,
    grade,
    majority,
    vote_key,
)
from pacore_graph.eval.pool import DRAW_KEY, EvalChatModel, draw_indices
from pacore_graph.eval.samples import (
    SAMPLING_FIELDS,
    Sample,
    create_sampling_graph,
    sampling_status,
)
from pacore_graph.eval.settings import Setting
from pacore_graph.graph import create_pacore_graph
from pacore_graph.record import to_record
from pacore_graph.resume import BOUNDS
from pacore_graph.secrets import model_secrets, redact
from pacore_graph.threads import ThreadStatus, arun_thread
from pacore_graph.trajectories import is_finished, latest_trajectories, status_counts
from pacore_graph.validation import SettingsCheck

THREAD_PREFIX = "pacore-eval"


class Progress(Protocol):
    """What the runner reports as it goes (the CLI draws a tqdm bar from it)."""

    def trajectories(self, count: int, tokens: int) -> None:
        """The backend generated ``count`` more trajectories with ``tokens`` completion
        tokens (threads read back from Redis and pooled draws generate nothing)."""

    def run_done(self) -> None:
        """One (setting, run, problem) finished."""

    def problem_done(self) -> None:
        """Every setting and run of one problem finished."""

    def calls(self, in_flight: int) -> None:
        """``in_flight`` model calls are running now (optional: called if defined)."""


@dataclass
class EvalSpec:
    """What to run: the table's rows (``settings``), each ``runs`` times on every problem
    (pass@1 is averaged), ``concurrency`` model calls in flight at once over all of them.
    ``pool``: round-1 pool size per problem, drawn from with ``pool_seed``; None samples
    every round 1 afresh. ``context``: `PaCoReContext` fields but ``rounds`` for every run
    (the baselines sample with its `SAMPLING_FIELDS`). ``namespace`` names the backend in
    thread ids, so evals of models never share threads. ``markers``: the cross-checking
    markers counted in synthesis rounds (`cross_checks`)."""

    settings: Sequence[Setting]
    runs: Annotated[int, Field(ge=1)] = 1
    concurrency: Annotated[int, Field(ge=1)] = 64
    pool: int | None = None
    pool_seed: int = 0
    context: Mapping[str, Any] = field(default_factory=dict)
    namespace: str = ""
    markers: Sequence[str] = CROSS_CHECK_MARKERS

    def __post_init__(self) -> None:
        _CHECK.check_instance(self)
        widest = max(self.settings, key=lambda s: s.first_k, default=None)
        if self.pool is not None and widest is not None and self.pool < widest.first_k:
            raise ValueError(
                f"--pool {self.pool} is smaller than the {widest.first_k} first-round "
                f"trajectories a run of {widest.label} draws"
            )

    def fingerprint(self, *, pool_only: bool = False) -> str:
        """A short hash of what changes the trajectories, part of every thread id. The pool's
        threads hash only the backend and sampling settings: a new draw seed, other PaCoRe
        settings and ``pacore curate`` reuse the same pool."""
        # The bounds only decide whether a run may start (`BOUNDS`): not what it computes.
        kept = SAMPLING_FIELDS if pool_only else self.context.keys() - BOUNDS
        context = {k: v for k, v in self.context.items() if k in kept}
        key: dict[str, Any] = {"ns": self.namespace, "context": context}
        if not pool_only:
            key |= {"pool": self.pool, "pool_seed": self.pool_seed}
        text = json.dumps(key, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


_CHECK = SettingsCheck(EvalSpec)


@dataclass
class EvalResult:
    """Everything the report needs. ``rows``: one per (setting, run, problem), in that order,
    the reference's results row plus grading fields. ``pools``: each problem's round-1 pool
    by its key, when a pool was used. ``timings``, apart from the reproducible ``rows``: the
    ``setting``, ``run``, ``request_id``, ``wall_seconds`` (waits for a call slot included),
    ``trajectories`` and ``stopped`` of each (setting, run, problem) run without failing."""

    rows: list[dict[str, Any]]
    problems: list[Problem]
    settings: list[Setting]
    runs: int
    pools: dict[str, list[Sample]] = field(default_factory=dict)
    timings: list[dict[str, Any]] = field(default_factory=list)


def _per_problem_failure(exc: BaseException) -> bool:
    """Failures that sink one problem but not the eval: a quorum, budget or context limit
    missed, a baseline sample failed for good. Bad settings, Redis going away and the rest
    stop the eval, as does an endpoint refusing every call (`EvalChatModel.fatal_failure`)."""
    if isinstance(exc, PaCoReError):
        return not isinstance(exc, ValueError | ConnectionError)
    if isinstance(exc, openai.APITimeoutError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code not in (401, 403, 404)
    return False


class _Runner:
    def __init__(
        self,
        model: BaseChatModel,
        problems: Sequence[Problem],
        spec: EvalSpec,
        checkpointer: BaseCheckpointSaver | None,
        progress: Progress | None,
    ) -> None:
        self.problems, self.spec, self.progress = list(problems), spec, progress
        self.checkpointer, self.fingerprint = checkpointer, spec.fingerprint()
        self.model = EvalChatModel(inner=model, concurrency=spec.concurrency)
        self.model.on_calls = getattr(progress, "calls", None)
        self.secrets = model_secrets(model)  # kept out of the rows' error messages
        first = next((list(s.round_vector) for s in spec.settings if s.kind == "pacore"), "low")
        bounds = {k: v for k, v in spec.context.items() if k in BOUNDS}  # it checks its defaults
        graph = create_pacore_graph(self.model, rounds=first, **bounds)
        self.pacore = graph.compile(checkpointer=checkpointer)
        sampler = create_sampling_graph(self.model, spec.context)
        self.sampler = sampler.compile(checkpointer=checkpointer)
        # Threads in progress at once: enough to keep every call slot busy, few enough
        # that problems finish (and are checkpointed as finished) in file order.
        self.slots = asyncio.Semaphore(spec.concurrency)
        self.pool_tasks: dict[str, asyncio.Future[list[Sample]]] = {}
        self.pools = self.model.pools
        self.left = {p.key: len(spec.settings) * spec.runs for p in self.problems}
        self.timings: list[dict[str, Any]] = []

    def failure(self, exc: Exception) -> str:
        """The error of a problem that failed alone, for its row; raises what stops the eval."""
        if not _per_problem_failure(exc):
            raise exc
        if (fatal := self.model.fatal_failure) is not None:
            raise fatal from exc  # the endpoint is gone: every problem would fail
        return redact(f"{type(exc).__name__}: {exc}", self.secrets)

    async def _run(
        self,
        graph: Any,
        input: dict[str, Any],
        thread_id: str,
        draw: dict[str, Any] | None,
        **kwargs: Any,
    ) -> tuple[ThreadStatus, dict[str, Any]]:
        configurable: dict[str, Any] = {DRAW_KEY: draw} if draw is not None else {}
        if self.checkpointer is not None:
            configurable["thread_id"] = thread_id
        config: RunnableConfig = {"configurable": configurable}

        def on_event(event: Any) -> None:
            # Round-1 trajectories served from the pool were counted when it was made.
            if not isinstance(event, dict) or event.get("type") != "trajectory_finished":
                return
            if self.progress is not None and (draw is None or event.get("round") != 1):
                self.progress.trajectories(1, event.get("completion_tokens") or 0)

        return await arun_thread(graph, input, config, on_event=on_event, **kwargs)

    async def _sample(
        self, thread_id: str, problem: Problem, n: int, draw: dict[str, Any] | None
    ) -> tuple[ThreadStatus, list[Sample]]:
        status, state = await self._run(
            self.sampler,
            {"messages": problem.chat(), "n": n},
            thread_id,
            draw,
            status_rule=sampling_status,
        )
        # In index order: they are stored in completion order.
        return status, sorted(state.get("samples") or [], key=lambda s: s["index"])

    async def pool_of(self, problem: Problem, size: int) -> list[Sample]:
        """The problem's round-1 pool of ``size``: one thread, shared by eval and curate."""
        fingerprint = self.spec.fingerprint(pool_only=True)
        thread_id = f"{THREAD_PREFIX}-{fingerprint}-pool{size}-{problem.key}"
        async with self.slots:
            return (await self._sample(thread_id, problem, size, None))[1]

    async def job(self, setting: Setting, run: int, problem: Problem) -> dict[str, Any]:
        thread_id = f"{THREAD_PREFIX}-{self.fingerprint}-{setting.name}-r{run}-{problem.key}"
        draw, spec = None, self.spec
        if spec.pool is not None:
            indices = draw_indices(
                spec.pool_seed, setting.name, run, problem.key, setting.first_k, spec.pool
            )
            draw = {"pool": problem.key, "indices": indices}
        base = {
            "setting": setting.name,
            "run": run,
            "category": problem.category,
            "gold": problem.answer,
            "round_vector": list(setting.round_vector),
            "pool_draw": draw["indices"] if draw else None,
            "thread_id": thread_id if self.checkpointer is not None else None,
        }
        status: str
        try:
            if spec.pool is not None:
                tasks = self.pool_tasks
                if problem.key not in tasks:
                    tasks[problem.key] = asyncio.ensure_future(self.pool_of(problem, spec.pool))
                # Shielded: one waiter being cancelled must not cancel the pool others share.
                self.pools[problem.key] = await asyncio.shield(tasks[problem.key])
            async with self.slots:
                started = time.monotonic()
                if setting.kind == "pacore":
                    # The whole vector, which ends in 1 and so runs as written.
                    context = {**spec.context, "rounds": list(setting.round_vector)}
                    input = {"messages": problem.chat()}
                    status, state = await self._run(
                        self.pacore, input, thread_id, draw, context=context
                    )
                    row = pacore_row(state, problem, spec.markers)
                    counts = status_counts(latest_trajectories(state.get("trajectories") or []))
                else:
                    status, samples = await self._sample(thread_id, problem, setting.first_k, draw)
                    row = baseline_row(samples, problem)
                    counts = Counter({"finished": len(samples)})
                wall = time.monotonic() - started
            if status != "finished":  # read back from Redis: nothing was timed
                timing = {"setting": setting.name, "run": run, "request_id": problem.id}
                timing |= {"wall_seconds": wall, "trajectories": counts.total()}
                self.timings.append(timing | {"stopped": counts["stopped"]})
        except Exception as exc:
            row = {**_EMPTY_ROW, "request_id": problem.id, "error": self.failure(exc)}
            status = "failed"
        self.left[problem.key] -= 1
        if self.progress is not None:
            self.progress.run_done()
            if self.left[problem.key] == 0:
                self.progress.problem_done()
        return {**row, **base, "status": status}

    async def run(self) -> EvalResult:
        # Started problem by problem; by (setting, run, problem) index for the rows' order.
        jobs = {
            (s, run, p): asyncio.ensure_future(self.job(setting, run, problem))
            for p, problem in enumerate(self.problems)
            for s, setting in enumerate(self.spec.settings)
            for run in range(1, self.spec.runs + 1)
        }
        try:
            await asyncio.gather(*jobs.values())  # raises the first failure at once
        finally:
            # An abort (or Ctrl-C) stops the rest; their threads resume on the next run.
            futures: list[asyncio.Future[Any]] = [*jobs.values(), *self.pool_tasks.values()]
            pending = [f for f in futures if not f.done()]
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        rows = [jobs[key].result() for key in sorted(jobs)]
        return EvalResult(
            rows, self.problems, list(self.spec.settings), self.spec.runs, self.pools, self.timings
        )


_EMPTY_ROW: dict[str, Any] = {
    "request_id": None,
    "final_response": "",
    "final_reasoning_content": None,
    "round_responses": [],
    "answer": None,
    "correct": False,
    "grader": None,
    "ttc_tokens": None,
    "agreement": [],
    "cross_checking": [],
    "dropped_references": None,
    "inputs_correct": None,
    "emergent": None,
    "all_inputs_wrong": None,
    "failed_trajectories": 0,
    "error": None,
}
"""A results row's fields, in order, as a failed row has them."""


def pacore_row(
    state: Mapping[str, Any], problem: Problem, markers: Sequence[str] = CROSS_CHECK_MARKERS
) -> dict[str, Any]:
    """A PaCoRe thread's results row, graded, with each round's agreement (the share of its
    trajectories giving the majority answer), cross-checking (markers per finished
    trajectory, thinking included; None for round 1), the references dropped for the
    context limit, and emergent correctness (right while every reference of the last
    synthesis was wrong; None without references)."""
    record = to_record(state, problem.id)
    verdict = grade(record["answer"] or "", problem.answer)
    # The trajectories are in (round, index) order.
    rounds = [list(ts) for _, ts in itertools.groupby(record["trajectories"], lambda t: t["round"])]
    text = [
        [f"{t['reasoning'] or ''}\n{t['content']}" for t in ts if is_finished(t)] for ts in rounds
    ]
    checks = [[cross_checks(x, markers) for x in xs] for xs in text]
    # What the final round was sent: the round before it, as recorded.
    inputs = record["rounds"][-2]["references"] if len(record["rounds"]) > 1 else []
    inputs_correct = [grade(m, problem.answer).correct for m in inputs]
    all_wrong = bool(inputs) and not any(inputs_correct)
    return {
        **_EMPTY_ROW,
        "request_id": record["request_id"],
        "final_response": record["final_response"],
        "final_reasoning_content": record["final_reasoning_content"],
        "round_responses": record["round_responses"],
        "answer": verdict.answer,
        "correct": verdict.correct,
        "grader": verdict.grader,
        "ttc_tokens": record["ttc_tokens"],
        "agreement": [
            agreement([vote_key(extract_answer(t["content"])) for t in ts]) for ts in rounds
        ],
        "cross_checking": [None, *(sum(c) / len(c) if c else None for c in checks[1:])],
        "dropped_references": sum(d["dropped_for_context"] for d in record["rounds"]),
        "inputs_correct": inputs_correct,
        "emergent": verdict.correct and all_wrong if inputs else None,
        "all_inputs_wrong": all_wrong if inputs else None,
        "failed_trajectories": record.get("failed", 0),
    }


def baseline_row(samples: Sequence[Sample], problem: Problem) -> dict[str, Any]:
    """A baseline's results row: one sample (``single``) or the first sample voting for
    the majority answer (``sc@N``, equivalent answers grouped by `vote_key`)."""
    keys = [vote_key(extract_answer(s["content"])) for s in samples]
    winner, _ = majority(keys)
    chosen = next((s for s, k in zip(samples, keys, strict=True) if k == winner), samples[0])
    verdict = grade(chosen["content"], problem.answer)
    return {
        **_EMPTY_ROW,
        "request_id": problem.id,
        "final_response": chosen["content"],
        "final_reasoning_content": chosen["reasoning"],
        "round_responses": [
            [{"content": s["content"], "reasoning_content": s["reasoning"]} for s in samples]
        ],
        "answer": verdict.answer,
        "correct": verdict.correct,
        "grader": verdict.grader,
        "ttc_tokens": sum(s["completion_tokens"] or 0 for s in samples),
        "agreement": [agreement(keys)],
    }


async def run_eval(
    model: BaseChatModel,
    problems: Sequence[Problem],
    spec: EvalSpec,
    *,
    checkpointer: BaseCheckpointSaver | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Runs every setting ``spec.runs`` times on every problem (from `load_problems`) and
    grades the answers; every call of ``model`` goes through one bound of
    ``spec.concurrency``. An `AsyncRedisSaver` ``checkpointer`` makes the eval resumable:
    run again, finished threads are read back and interrupted ones resumed.

    Raises:
        Exception: What stops the whole eval (an unreachable endpoint, Redis down, a
            rejected key); a failure of one problem is recorded in its row instead.
    """
    return await _Runner(model, problems, spec, checkpointer, progress).run()
