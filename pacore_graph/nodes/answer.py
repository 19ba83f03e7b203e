"""``answer``: the final round's trajectory becomes the assistant's reply, with PaCoRe's usage."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer

from pacore_graph.record import run_record
from pacore_graph.state import PaCoReState
from pacore_graph.trajectories import final_trajectory, split_thinking


def answer(state: PaCoReState) -> dict[str, Any]:
    """Appends the answer to ``messages`` and writes the run's record to ``pacore``; the
    message is what the final round streamed, under the same id, so it is not sent twice."""
    run = run_record(state)
    final = final_trajectory(run["trajectories"], len(run["round_vector"]))
    assert final is not None, "compact lets no final round through without its answer"
    reply, thinking = split_thinking(final)
    ttc, prompt = run["ttc_tokens"], run["max_prompt_tokens"]
    message = AIMessage(
        content=reply,
        id=final["message_id"],
        additional_kwargs={"reasoning_content": thinking} if thinking else {},
        usage_metadata={"input_tokens": prompt, "output_tokens": ttc, "total_tokens": prompt + ttc},
        response_metadata={
            "finish_reason": final["finish_reason"],
            "pacore": {
                **{k: run[k] for k in ("round_vector", "ttc_tokens", "max_prompt_tokens")},
                "trajectories": len(run["trajectories"]),
                **{k: run[k] for k in ("truncated", "failed", "stopped", "budget_exhausted")},
            },
        },
    )
    get_stream_writer()(
        {"type": "answer", "content": reply, "ttc_tokens": ttc, "max_prompt_tokens": prompt}
    )
    return {"messages": [message], "pacore": run}
