"""``synthesize``: P(x, M) for the next round, checked against the context limit."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.errors import ContextLimitError
from pacore_graph.messages import build_round_messages, message_text
from pacore_graph.record import reference_ids, reference_texts
from pacore_graph.resume import check_same_run
from pacore_graph.state import PaCoReState

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate: 3 characters a token."""
    return math.ceil(len(text) / 3)


def synthesize(
    state: PaCoReState,
    runtime: Runtime[PaCoReContext],
    *,
    defaults: PaCoReContext,
    count: TokenCounter = estimate_tokens,
) -> dict[str, Any]:
    """The next round's M: compact's, or what a person made of it (``references``), fitted
    to the context limit and recorded as sent; for the final round after a budget ran out
    or a review's "finish"."""
    settings = merge_context(defaults, runtime.context)
    check_same_run(state["settings"], settings)
    previous = state["rounds_done"][-1]
    r = state["round"] + 1
    if state.get("budget_exhausted") or previous.get("review") == "finish":
        r = len(state["round_vector"])
    given = list(state.get("references") or [])
    edited = given != reference_texts(previous, state["trajectories"])
    plain = not given and settings.empty_references == "problem"  # the paper: the problem alone
    sent, limit = list(given), settings.context_limit
    while limit is not None and not plain:  # fit the limit, counting message text only
        prompt = build_round_messages(state["messages"], sent)
        if (size := sum(count(message_text(m)) for m in prompt)) <= limit:
            break
        if settings.on_context_overflow != "drop_longest" or not sent:
            raise ContextLimitError(
                f"round {r} synthesis prompt is ~{size} tokens with {len(sent)} references, "
                f"over context_limit={limit}; raise the limit, lower K, or set "
                "on_context_overflow='drop_longest'"
            )
        sent.remove(max(sent, key=len))
    k = state["round_vector"][r - 1]
    get_stream_writer()({"type": "round_started", "round": r, "k": k, "references": len(sent)})
    summary = {
        "round": previous["round"],
        "references": reference_ids(sent, previous["round"], state["trajectories"]),
        "dropped_for_context": len(given) - len(sent),
    }
    update = [{**summary, "review": "edited"} if edited else summary]  # merged into its summary
    return {"round": r, "references": None if plain else sent, "rounds_done": update}
