"""``prepare``: checks the input, fixes the round vector, starts round 1."""

from __future__ import annotations

import time
import uuid
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from pacore_graph.context import PaCoReContext, merge_context
from pacore_graph.errors import InvalidInputError
from pacore_graph.messages import last_user_index
from pacore_graph.resume import run_settings
from pacore_graph.state import PaCoReState
from pacore_graph.validation import check_input, check_settings


def prepare(
    state: PaCoReState, runtime: Runtime[PaCoReContext], *, defaults: PaCoReContext
) -> dict[str, Any]:
    """The entry node; fails before any model call on bad rounds, settings or input."""
    settings = merge_context(defaults, runtime.context)
    vector = check_settings(settings)
    messages = state.get("messages")
    if not messages:
        raise InvalidInputError("no messages in the input: pass {'messages': [('user', ...)]}")
    last_user_index(messages)
    check_input(messages, settings)
    get_stream_writer()(
        {"type": "round_started", "round": 1, "k": vector[0], "round_vector": vector}
    )
    # Each run of a thread (a multi-turn chat) starts clean.
    return {
        "round_vector": vector,
        "round": 1,
        "references": None,
        "trajectories": Overwrite([]),
        "rounds_done": Overwrite([]),
        "started_at": time.time(),
        "run_id": uuid.uuid4().hex,
        "budget_exhausted": None,
        "retry": [],
        "settings": run_settings(settings),
        "pacore": None,
    }
