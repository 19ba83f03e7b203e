"""The run's record: the reference's results.jsonl row, and the fuller PaCoRe record."""

from __future__ import annotations

from typing import Any

from pacore_graph.nodes.answer import split_thinking, usage_totals
from pacore_graph.state import PaCoReState, is_finished, latest_trajectories


def to_results_row(state: PaCoReState, request_id: str | int | None = None) -> dict[str, Any]:
    """The reference pipeline's output row for one problem.

    ``round_responses`` lists every round, the final one included, each as the
    ``{"content", "reasoning_content"}`` of its trajectories in trajectory order.
    """
    vector = state["round_vector"]
    by_round: list[list[dict[str, Any]]] = [[] for _ in vector]
    for t in latest_trajectories(state["trajectories"]):
        by_round[t["round"] - 1].append(
            {"content": t["content"], "reasoning_content": t["reasoning"]}
        )
    final = by_round[-1][0] if by_round[-1] else {"content": "", "reasoning_content": None}
    return {
        "request_id": request_id,
        "final_response": final["content"],
        "final_reasoning_content": final["reasoning_content"],
        "round_responses": by_round,
    }


def to_record(state: PaCoReState, request_id: str | int | None = None) -> dict[str, Any]:
    """The results row plus PaCoRe's own accounting: answer, TTC, per-round summaries."""
    trajectories = latest_trajectories(state["trajectories"])
    final = [t for t in trajectories if t["round"] == len(state["round_vector"]) and is_finished(t)]
    ttc, largest = usage_totals(trajectories)
    return {
        **to_results_row(state, request_id),
        "answer": split_thinking(final[0])[0] if final else None,
        "round_vector": state["round_vector"],
        "ttc_tokens": ttc,
        "max_prompt_tokens": largest,
        "rounds": state.get("rounds_done", []),
        "failed": sum(t.get("status") == "failed" for t in trajectories),
        "stopped": sum(t.get("status") == "stopped" for t in trajectories),
        "budget_exhausted": state.get("budget_exhausted"),
        "trajectories": trajectories,
    }
