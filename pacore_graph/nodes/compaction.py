"""``compact``: the reducer that turns a round's trajectories into M_r, in the reference order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.config import get_stream_writer

from pacore_graph.compaction import order_references
from pacore_graph.context import PaCoReContext
from pacore_graph.settings import run_settings
from pacore_graph.state import PaCoReState, RoundSummary


def make_compact_node(defaults: PaCoReContext) -> Callable[[PaCoReState], dict[str, Any]]:
    """The compaction reducer node, run once after all of a round's trajectories."""

    def compact(state: PaCoReState) -> dict[str, Any]:
        settings = run_settings(defaults)
        r = state["round"]
        # Trajectory order, not completion order, so the shuffle is reproducible.
        batch = sorted(
            (t for t in state["trajectories"] if t["round"] == r), key=lambda t: t["index"]
        )
        kept = [t for t in batch if t["content"]]
        dropped_truncated = 0
        if settings.drop_truncated:
            dropped_truncated = sum(t["truncated"] for t in kept)
            kept = [t for t in kept if not t["truncated"]]
        ordered = order_references(kept, lambda t: t["content"], settings.seed)  # type: ignore[arg-type]
        references = [t["message"] for t in ordered if t["message"]]
        summary = RoundSummary(
            round=r,
            k=len(batch),
            references=references,
            dropped_empty=len(batch) - dropped_truncated - len(references),
            dropped_truncated=dropped_truncated,
            dropped_for_context=0,
        )
        get_stream_writer()(
            {
                "type": "round_finished",
                "round": r,
                "k": len(batch),
                "references": len(references),
                "completion_tokens": sum(t["completion_tokens"] or 0 for t in batch),
                "truncated": sum(t["truncated"] for t in batch),
            }
        )
        return {"rounds_done": [*state.get("rounds_done", []), summary]}

    return compact


def route_after_compact(state: PaCoReState) -> str:
    """The termination edge: after the final round (K_R = 1) comes the answer."""
    return "answer" if state["round"] >= len(state["round_vector"]) else "synthesize"
