"""The graph's state: the conversation, the round vector and every trajectory's record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


class Trajectory(TypedDict):
    """One trajectory's record."""

    round: int
    """1-based round number."""
    index: int
    """0-based position in its round."""
    content: str
    """The response content as the backend returned it."""
    reasoning: str | None
    """Thinking the backend returned separately (``reasoning_content``/``reasoning``)."""
    message: str
    """The compacted message later rounds see."""
    finish_reason: str | None
    truncated: bool
    """True when ``finish_reason == "length"``."""
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float


class RoundSummary(TypedDict):
    """What one round produced and passed on."""

    round: int
    k: int
    references: list[str]
    """M_r in the order the next synthesis prompt lists them."""
    dropped_empty: int
    dropped_truncated: int
    dropped_for_context: int


def add_trajectories(
    state: list[Trajectory], writes: Sequence[list[Trajectory]]
) -> list[Trajectory]:
    """Appends each task's trajectories (batching-invariant, as `DeltaChannel` requires)."""
    return [*state, *(t for batch in writes for t in batch)]


class PaCoReInput(TypedDict):
    """What a caller passes: a chat, like any chat-model step."""

    messages: Annotated[list[AnyMessage], add_messages]


class PaCoReState(PaCoReInput, total=False):
    """The full state; ``trajectories`` and ``rounds_done`` are reset at the start of each run."""

    round_vector: list[int]
    """K = [K_1, ..., K_R], final 1 included."""
    round: int
    """The round in progress (1-based)."""
    references: list[str] | None
    """The M fed to the round in progress; None sends the caller's messages unchanged."""
    # A DeltaChannel keeps each trajectory only as its task's write in the checkpointer
    # and rebuilds the list by replay, so a long run does not re-serialize every earlier
    # trajectory into every later checkpoint.
    trajectories: Annotated[
        list[Trajectory], DeltaChannel(add_trajectories, snapshot_frequency=1000)
    ]
    rounds_done: list[RoundSummary]
