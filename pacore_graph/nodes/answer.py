"""``answer``: the final round's trajectory becomes the assistant's reply, with PaCoRe's usage."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer

from pacore_graph.compaction import reference_compaction
from pacore_graph.state import PaCoReState, Trajectory, is_finished, latest_trajectories


def split_thinking(trajectory: Trajectory) -> tuple[str, str | None]:
    """The reply without thinking, and the thinking (separated or inline ``<think>``)."""
    content = trajectory["content"]
    reply = reference_compaction(content)
    inline = content[: len(content) - len(reply)].removesuffix("</think>")
    inline = inline.strip().removeprefix("<think>").strip()
    return reply.strip(), trajectory["reasoning"] or inline or None


def usage_totals(trajectories: list[Trajectory]) -> tuple[int, int]:
    """Effective TTC (all completion tokens) and the largest prompt of any call."""
    ttc = sum(t["completion_tokens"] or 0 for t in trajectories)
    largest = max((t["prompt_tokens"] or 0 for t in trajectories), default=0)
    return ttc, largest


def answer(state: PaCoReState) -> dict[str, Any]:
    """Appends the answer to ``messages`` as an ordinary ``AIMessage``."""
    trajectories = latest_trajectories(state["trajectories"])
    final = next(
        t for t in trajectories if t["round"] == len(state["round_vector"]) and is_finished(t)
    )
    reply, thinking = split_thinking(final)
    ttc, largest = usage_totals(trajectories)
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
                "failed": sum(t.get("status") == "failed" for t in trajectories),
                "stopped": sum(t.get("status") == "stopped" for t in trajectories),
                "budget_exhausted": state.get("budget_exhausted"),
            },
        },
    )
    get_stream_writer()(
        {"type": "answer", "content": reply, "ttc_tokens": ttc, "max_prompt_tokens": largest}
    )
    return {"messages": [message]}
