"""The run's record: the ``pacore`` output key, the reference's results.jsonl row, and the
fuller PaCoRe record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pacore_graph.state import PaCoReRun
from pacore_graph.trajectories import (
    final_trajectory,
    latest_trajectories,
    split_thinking,
    status_counts,
    usage_totals,
)


def run_record(state: Mapping[str, Any]) -> PaCoReRun:
    """The ``pacore`` output key of a finished run's state: its trajectories and accounting."""
    trajectories = latest_trajectories(state["trajectories"])
    ttc, largest = usage_totals(trajectories)
    counts = status_counts(trajectories)
    return PaCoReRun(
        round_vector=list(state["round_vector"]),
        rounds_done=list(state.get("rounds_done") or []),
        trajectories=trajectories,
        ttc_tokens=ttc,
        max_prompt_tokens=largest,
        truncated=sum(t["truncated"] for t in trajectories),
        failed=counts["failed"],
        stopped=counts["stopped"],
        budget_exhausted=state.get("budget_exhausted"),
        settings=dict(state.get("settings") or {}),
    )


def _run_of(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run in a graph's output (its ``pacore`` key), a full state or a `PaCoReRun`."""
    if "trajectories" in result:
        return result
    run = result.get("pacore")
    if run is None:
        raise ValueError("no PaCoRe run in this result: it has no 'pacore' record")
    return run


def to_results_row(
    result: Mapping[str, Any], request_id: str | int | None = None
) -> dict[str, Any]:
    """The reference pipeline's output row for a ``graph.invoke`` result, a state or a
    `PaCoReRun`; ``round_responses`` holds each round's replies in trajectory order."""
    run = _run_of(result)
    vector = run["round_vector"]
    by_round: list[list[dict[str, Any]]] = [[] for _ in vector]
    for t in latest_trajectories(run["trajectories"]):
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


def to_record(result: Mapping[str, Any], request_id: str | int | None = None) -> dict[str, Any]:
    """`to_results_row` plus PaCoRe's own accounting: answer, TTC, per-round summaries."""
    run = run_record(_run_of(result))
    final = final_trajectory(run["trajectories"], len(run["round_vector"]))
    return {
        **to_results_row(run, request_id),
        "answer": split_thinking(final)[0] if final else None,
        "round_vector": run["round_vector"],
        "ttc_tokens": run["ttc_tokens"],
        "max_prompt_tokens": run["max_prompt_tokens"],
        "rounds": run["rounds_done"],
        "failed": run["failed"],
        "stopped": run["stopped"],
        "budget_exhausted": run["budget_exhausted"],
        "trajectories": run["trajectories"],
    }
