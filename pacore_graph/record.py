"""The run's record: the ``pacore`` output key, the reference's results.jsonl row, and the
fuller PaCoRe record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pacore_graph.state import PaCoReRun
from pacore_graph.trajectories import (
    Trajectory,
    final_trajectory,
    is_finished,
    latest_trajectories,
    reference_text,
    split_thinking,
    status_counts,
    usage_totals,
)


def reference_ids(
    texts: Iterable[str], round_number: int, trajectories: Iterable[Trajectory]
) -> list[int | str]:
    """``texts`` as a summary of round ``round_number`` records them, so no text is stored
    twice: a trajectory's index where a text is that trajectory's `reference_text` (each
    index once), else the text."""
    indices: dict[str, list[int]] = {}
    for t in latest_trajectories(trajectories):
        if t["round"] == round_number and is_finished(t):
            indices.setdefault(reference_text(t), []).append(t["index"])
    return [indices[text].pop(0) if indices.get(text) else text for text in texts]


def reference_texts(summary: Mapping[str, Any], trajectories: Sequence[Trajectory]) -> list[str]:
    """The references a round summary records, as text (`reference_ids` undone)."""
    by_index = {t["index"]: t for t in trajectories if t["round"] == summary["round"]}
    return [r if isinstance(r, str) else reference_text(by_index[r]) for r in summary["references"]]


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
        "rounds": [
            {**d, "references": reference_texts(d, run["trajectories"])} for d in run["rounds_done"]
        ],
        "failed": run["failed"],
        "stopped": run["stopped"],
        "budget_exhausted": run["budget_exhausted"],
        "trajectories": run["trajectories"],
    }
