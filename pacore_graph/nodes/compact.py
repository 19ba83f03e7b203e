"""``compact``: turns a round's trajectories into M_r in the reference order, and decides
how the run goes on: next round, a retry of failed calls, or the final synthesis when a
budget ran out."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from pacore_graph._compat import is_resuming
from pacore_graph.budget import BudgetName, quorum
from pacore_graph.compaction import order_references
from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.errors import BudgetExhaustedError, QuorumError
from pacore_graph.record import reference_ids, reference_texts
from pacore_graph.resume import check_same_run
from pacore_graph.state import PaCoReState, RoundSummary
from pacore_graph.stragglers import is_straggler_stop
from pacore_graph.trajectories import is_finished, latest_trajectories, reference_text, usage_totals


def compact(
    state: PaCoReState,
    runtime: Runtime[PaCoReContext],
    config: RunnableConfig,
    *,
    defaults: PaCoReContext,
) -> dict[str, Any]:
    """Runs once after all of a round's trajectories."""
    settings = merge_context(defaults, runtime.context)
    check_same_run(state["settings"], settings)
    r = state["round"]
    final = r == len(state["round_vector"])
    latest = latest_trajectories(state["trajectories"])
    # Trajectory order, not completion order, so the shuffle is reproducible.
    batch = [t for t in latest if t["round"] == r]
    finished = [t for t in batch if is_finished(t)]
    failed = [t for t in batch if t["status"] == "failed"]
    stopped = [t for t in batch if t["status"] == "stopped"]
    # The budget that ended this round, from the run's tokens or the records it stopped.
    limit, stops = settings.max_ttc_tokens, [t for t in stopped if not is_straggler_stop(t)]
    budget: BudgetName | None = None
    if not final and limit is not None and usage_totals(latest)[0] >= limit:
        budget = "max_ttc_tokens"
    elif not final and stops:
        budget = "max_seconds" if "max_seconds" in (stops[0]["error"] or "") else "max_ttc_tokens"
    need = 1 if final else quorum(settings.min_success, len(batch))
    if budget is None and len(finished) < need:
        if failed and is_resuming(config):
            # A resumed thread asks the failed calls again; finished ones are kept.
            return {"retry": [t["index"] for t in failed]}
        raise QuorumError(r, len(finished), len(batch), need, [t["error"] for t in failed])
    kept = [t for t in finished if t["content"]]
    dropped_truncated = 0
    if settings.drop_truncated:
        dropped_truncated = sum(t["truncated"] for t in kept)
        kept = [t for t in kept if not t["truncated"]]
    ordered = order_references(kept, lambda t: t["content"], settings.seed or 0)
    references = [text for t in ordered if (text := reference_text(t))]
    dropped_empty = len(finished) - dropped_truncated - len(references)
    done = state.get("rounds_done") or []
    if budget is not None and not references:  # the final round is sent the latest M left
        sent_before = (reference_texts(d, state["trajectories"]) for d in reversed(done))
        references = next((texts for texts in sent_before if texts), [])
    if budget is not None and not references:
        raise BudgetExhaustedError(
            f"budget {budget}={getattr(settings, budget)} ran out in round {r} before any "
            f"trajectory finished ({len(stopped)} stopped, {len(failed)} failed): "
            "nothing to synthesize"
        )
    summary = RoundSummary(
        round=r,
        k=len(batch),
        references=reference_ids(references, r, latest),
        dropped_empty=dropped_empty,
        review=None,
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
            "completion_tokens": usage_totals(batch)[0],
            "truncated": sum(t["truncated"] for t in batch),
            "failed": len(failed),
            "stopped": len(stopped),
            "budget_exhausted": budget,
        }
    )
    sent = list(state.get("references") or [])  # recorded as sent, if edited since synthesize
    edited = []
    if done and sent != reference_texts(done[-1], latest):
        ids = reference_ids(sent, done[-1]["round"], latest)
        edited = [{"round": done[-1]["round"], "references": ids, "review": "edited"}]
    return {
        "rounds_done": [*edited, summary],
        # After the final round no round is sent references: the record keeps what was.
        "references": None if final else references,
        "retry": [],
        "budget_exhausted": budget or state.get("budget_exhausted"),
    }
