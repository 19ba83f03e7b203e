"""``pacore curate``: the paper's Stage-1 training-data filter (Section 3.1): the problems
whose round-1 message accuracy (over a pool: eval's, `_Runner.pool_of`, so one Redis makes it
once and a rerun resumes) is below a threshold, streamed through a window of ``concurrency``
problems, each row written once it and those before it finished: memory stays bounded."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any, TextIO

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver

from pacore_graph.compaction import (
    Compaction,
    compaction_input,
    order_references,
    resolve_compaction,
)
from pacore_graph.context import DEFAULTS, merge_context
from pacore_graph.eval.dataset import Problem
from pacore_graph.eval.grading import grade
from pacore_graph.eval.runner import EvalSpec, Progress, _Runner
from pacore_graph.eval.samples import Sample


def summary_text(summary: dict[str, Any]) -> str:
    """`curate`'s summary as printed: kept / total, then the histogram, a bar a line."""
    lines = [
        f"kept {summary['kept']}/{summary['total']} problems: message accuracy below "
        f"{summary['threshold']:g} over a pool of {summary['pool']} ({summary['failed']} failed)",
        "right messages | problems",
        *(f"{k:>8} | {n:>5} {'#' * min(n, 50)}" for k, n in summary["histogram"].items()),
    ]
    return "\n".join(lines) + "\n"


def curated_row(
    problem: Problem, samples: list[Sample], rule: Compaction, seed: int
) -> dict[str, Any]:
    """A problem's row, kept or not: its input fields (``pacore eval`` reads the file back),
    the messages compacted by ``rule`` in the reference order (``seed``) ready for a
    synthesis round (empty ones dropped), their grades, and the message accuracy over the
    whole pool."""
    messages = [rule(compaction_input(rule, s["content"], s["reasoning"])) for s in samples]
    kept = order_references([m for m in messages if m], str, seed)
    correct = [grade(m, problem.answer).correct for m in kept]
    return {
        "id": problem.id,
        "messages": problem.messages,
        "ground_truth": {"answer": problem.answer},
        "category": problem.category,
        "references": kept,
        "references_correct": correct,
        "message_accuracy": sum(correct) / len(samples) if samples else 0.0,
        "pool": len(samples),
    }


async def curate(
    model: BaseChatModel,
    problems: Iterable[Problem],
    spec: EvalSpec,
    out: TextIO,
    *,
    max_message_accuracy: float,
    checkpointer: BaseCheckpointSaver | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Writes to ``out``, in file order, one JSONL `curated_row` per problem whose message
    accuracy over a pool of ``spec.pool`` is strictly below ``max_message_accuracy``.

    Returns the summary: ``pool``, ``threshold``, problems ``total``, ``kept`` and ``failed``
    (skipped: their pool failed for good; what stops an eval stops this too), and the
    ``histogram`` of right messages (``{"3/24": problems}``).
    """
    size = spec.pool or 1
    settings = merge_context(DEFAULTS, dict(spec.context))
    rule, seed = resolve_compaction(settings.compaction or "reference"), settings.seed or 0
    runner = _Runner(model, [], spec, checkpointer, progress)
    summary: dict[str, Any] = {"pool": size, "threshold": max_message_accuracy}
    summary |= {"total": 0, "kept": 0, "failed": 0}
    right: Counter[int] = Counter()
    window: deque[asyncio.Future[dict[str, Any] | None]] = deque()

    async def one(problem: Problem) -> dict[str, Any] | None:
        try:
            return curated_row(problem, await runner.pool_of(problem, size), rule, seed)
        except Exception as exc:
            runner.failure(exc)  # raises what stops an eval
            return None

    def emit(row: dict[str, Any] | None) -> None:
        summary["total"] += 1
        if progress is not None:
            progress.problem_done()
        if row is None:
            summary["failed"] += 1
            return
        right[sum(row["references_correct"])] += 1
        if row["message_accuracy"] < max_message_accuracy:
            summary["kept"] += 1
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()

    try:
        for problem in problems:
            window.append(asyncio.ensure_future(one(problem)))
            if len(window) >= spec.concurrency:
                emit(await window.popleft())
        while window:
            emit(await window.popleft())
    finally:
        for task in window:  # an abort (or Ctrl-C): the rest resume on the next run
            task.cancel()
        await asyncio.gather(*window, return_exceptions=True)
    return summary | {"histogram": {f"{k}/{size}": right[k] for k in sorted(right)}}
