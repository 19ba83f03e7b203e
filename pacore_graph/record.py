"""The run's record: the reference's results.jsonl row, and the fuller PaCoRe record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pacore_graph.trajectories import (
    final_trajectory,
    latest_trajectories,
    split_thinking,
    status_counts,
    usage_totals,
)


def to_results_row(state: Mapping[str, Any], request_id: str | int | None = None) -> dict[str, Any]:
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


def to_record(state: Mapping[str, Any], request_id: str | int | None = None) -> dict[str, Any]:
    """The results row plus PaCoRe's own accounting: answer, TTC, per-round summaries."""
    trajectories = latest_trajectories(state["trajectories"])
    final = final_trajectory(trajectories, len(state["round_vector"]))
    ttc, largest = usage_totals(trajectories)
    counts = status_counts(trajectories)
    return {
        **to_results_row(state, request_id),
        "answer": split_thinking(final)[0] if final else None,
        "round_vector": state["round_vector"],
        "ttc_tokens": ttc,
        "max_prompt_tokens": largest,
        "rounds": state.get("rounds_done", []),
        "failed": counts["failed"],
        "stopped": counts["stopped"],
        "budget_exhausted": state.get("budget_exhausted"),
        "trajectories": trajectories,
    }
