"""``answer``: the final round's trajectory becomes the assistant's reply, with PaCoRe's usage."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer

from pacore_graph.state import PaCoReState
from pacore_graph.trajectories import (
    final_trajectory,
    latest_trajectories,
    split_thinking,
    status_counts,
    usage_totals,
)


def answer(state: PaCoReState) -> dict[str, Any]:
    """Appends the answer to ``messages`` as an ordinary ``AIMessage``."""
    trajectories = latest_trajectories(state["trajectories"])
    final = final_trajectory(trajectories, len(state["round_vector"]))
    assert final is not None, "compact lets no final round through without its answer"
    reply, thinking = split_thinking(final)
    ttc, largest = usage_totals(trajectories)
    counts = status_counts(trajectories)
    message = AIMessage(
        content=reply,
        additional_kwargs={"reasoning_content": thinking} if thinking else {},
        usage_metadata={
            "input_tokens": largest,
            "output_tokens": ttc,
            "total_tokens": largest + ttc,
        },
        response_metadata={
            "finish_reason": final["finish_reason"],
            "pacore": {
                "round_vector": state["round_vector"],
                "ttc_tokens": ttc,
                "max_prompt_tokens": largest,
                "trajectories": len(trajectories),
                "truncated": sum(t["truncated"] for t in trajectories),
                "failed": counts["failed"],
                "stopped": counts["stopped"],
                "budget_exhausted": state.get("budget_exhausted"),
            },
        },
    )
    get_stream_writer()(
        {"type": "answer", "content": reply, "ttc_tokens": ttc, "max_prompt_tokens": largest}
    )
    return {"messages": [message]}
