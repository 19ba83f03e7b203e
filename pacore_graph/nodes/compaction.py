"""``compact``: the reducer that turns a round's trajectories into M_r, in the reference order,
and decides how the run goes on: next round, a retry of failed calls, or straight to the
final synthesis when a budget ran out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.types import Send

from pacore_graph.budget import exhausted, quorum
from pacore_graph.compaction import order_references
from pacore_graph.context import PaCoReContext
from pacore_graph.errors import BudgetExhaustedError, QuorumError
from pacore_graph.nodes.synthesis import round_tasks
from pacore_graph.settings import run_settings
from pacore_graph.state import (
    PaCoReState,
    RoundSummary,
    Trajectory,
    is_finished,
    latest_trajectories,
)

# LangGraph marks the first step of a run that resumes a thread with this config key. There
# is no public accessor; tests/test_faults.py fails if a LangGraph upgrade drops it.
_RESUMING = "__pregel_resuming"


def _causes(failed: list[Trajectory]) -> str:
    counts = Counter(t.get("error") or "unknown error" for t in failed)
    return "; ".join(f"{n}× {cause}" for cause, n in counts.most_common(3)) or "none recorded"


def make_compact_node(
    defaults: PaCoReContext,
) -> Callable[[PaCoReState, RunnableConfig], dict[str, Any]]:
    """The compaction reducer node, run once after all of a round's trajectories."""

    def compact(state: PaCoReState, config: RunnableConfig) -> dict[str, Any]:
        settings = run_settings(defaults)
        r = state["round"]
        final = r == len(state["round_vector"])
        latest = latest_trajectories(state["trajectories"])
        # Trajectory order, not completion order, so the shuffle is reproducible.
        batch = [t for t in latest if t["round"] == r]
        finished = [t for t in batch if is_finished(t)]
        failed = [t for t in batch if t.get("status") == "failed"]
        stopped = [t for t in batch if t.get("status") == "stopped"]
        spent = sum(t["completion_tokens"] or 0 for t in latest)
        budget = None
        if not final:
            budget = exhausted(settings, state.get("started_at", 0.0), spent)
            if stopped and budget is None:
                budget = (
                    "max_seconds"
                    if "max_seconds" in (stopped[0]["error"] or "")
                    else ("max_ttc_tokens")
                )
        need = 1 if final else quorum(settings.min_success, len(batch))
        if budget is None and len(finished) < need:
            if failed and config.get("configurable", {}).get(_RESUMING):
                # A resumed thread asks the failed calls again; finished ones are kept.
                return {"retry": [t["index"] for t in failed]}
            raise QuorumError(r, len(finished), len(batch), need, _causes(failed))
        kept = [t for t in finished if t["content"]]
        dropped_truncated = 0
        if settings.drop_truncated:
            dropped_truncated = sum(t["truncated"] for t in kept)
            kept = [t for t in kept if not t["truncated"]]
        ordered = order_references(kept, lambda t: t["content"], settings.seed)  # type: ignore[arg-type]
        references = [t["message"] for t in ordered if t["message"]]
        if (
            budget is not None
            and not references
            and not any(d["references"] for d in state.get("rounds_done", []))
        ):
            limit = getattr(settings, budget)
            raise BudgetExhaustedError(
                f"budget {budget}={limit} ran out in round {r} before any trajectory finished "
                f"({len(stopped)} stopped, {len(failed)} failed): nothing to synthesize"
            )
        summary = RoundSummary(
            round=r,
            k=len(batch),
            references=references,
            dropped_empty=len(finished) - dropped_truncated - len(references),
            dropped_truncated=dropped_truncated,
            dropped_for_context=0,
            failed=len(failed),
            stopped=len(stopped),
        )
        get_stream_writer()(
            {
                "type": "round_finished",
                "round": r,
                "k": len(batch),
                "references": len(references),
                "completion_tokens": sum(t["completion_tokens"] or 0 for t in batch),
                "truncated": sum(t["truncated"] for t in batch),
                "failed": len(failed),
                "stopped": len(stopped),
                "budget_exhausted": budget,
            }
        )
        update: dict[str, Any] = {
            "rounds_done": [*state.get("rounds_done", []), summary],
            "retry": [],
        }
        if budget is not None:
            update["budget_exhausted"] = budget
        return update

    return compact


def route_after_compact(state: PaCoReState) -> str | list[Send]:
    """The termination edge: after the final round (K_R = 1) comes the answer; a resumed
    round whose quorum failed sends its failed trajectories again."""
    if state.get("retry"):
        return round_tasks(state, state["retry"])
    return "answer" if state["round"] >= len(state["round_vector"]) else "synthesize"
