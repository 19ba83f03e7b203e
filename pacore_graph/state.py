"""The graph's state: the conversation, the round vector and every trajectory's record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.channels.untracked_value import UntrackedValue
from langgraph.graph.message import Messages, add_messages
from typing_extensions import TypedDict

from pacore_graph.errors import InvalidInputError
from pacore_graph.trajectories import Trajectory


class RoundSummary(TypedDict):
    """What one round produced and passed on."""

    round: int
    k: int
    references: list[int | str]
    """M_r as the next round was sent it, in its order: the index of a trajectory of this
    round for its compacted content (`reference_texts`), or a text a person wrote."""
    review: Literal["approved", "edited", "finish"] | None
    """What a person did with M_r: nothing (None), approved it, edited it (a `review`
    resume or a state edit of ``references``), or went on to the final synthesis."""
    dropped_empty: int
    dropped_truncated: int
    dropped_for_context: int
    failed: int
    stopped: int


def add_trajectories(
    state: list[Trajectory], writes: Sequence[list[Trajectory]]
) -> list[Trajectory]:
    """Appends each task's trajectories."""
    return [*state, *(t for batch in writes for t in batch)]


def merge_round_summaries(
    state: list[RoundSummary], writes: Sequence[Sequence[Mapping[str, Any]]]
) -> list[RoundSummary]:
    """Adds each round's summary, or updates the fields a write names of its round's."""
    by_round: dict[int, Any] = {s["round"]: s for s in state}
    for batch in writes:
        for summary in batch:
            by_round[summary["round"]] = {**by_round.get(summary["round"], {}), **summary}
    return list(by_round.values())


def add_chat_messages(left: Messages, right: Messages) -> Messages:
    """LangGraph's ``add_messages``; InvalidInputError, in one line, for a bad message."""
    if right is None:
        raise InvalidInputError("messages is None: pass {'messages': [('user', ...)]}")
    try:
        return add_messages(left, right)
    except (ValueError, TypeError, KeyError, AttributeError, NotImplementedError) as exc:
        raise InvalidInputError(f"bad messages in the input: {_why(exc)}") from exc


def chat_messages(messages: Sequence[Any]) -> list[AnyMessage]:
    """``messages`` (messages, dicts, ``(role, text)`` tuples) as the graph reads them;
    InvalidInputError for one that is not a chat message."""
    return cast("list[AnyMessage]", add_chat_messages([], list(messages)))


def _why(exc: BaseException) -> str:
    """One line on what LangChain's message conversion failed on."""
    if isinstance(exc, KeyError):
        field = exc.args[0] if exc.args else "?"
        if field == "tool_call_id":  # LangChain's KeyError says only the field's name
            return "a tool message needs a tool_call_id, the id of the tool call it answers"
        return f"a message lacks the field {field!r}"
    if isinstance(exc, AttributeError):  # e.g. tool_calls that are no list of objects
        return f"a message has a field of the wrong type ({exc})"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PaCoReRun(TypedDict):
    """The record of a finished run: the graph's one output key besides ``messages``."""

    round_vector: list[int]
    rounds_done: list[RoundSummary]
    trajectories: list[Trajectory]
    """The latest attempt of each trajectory, by round and index."""
    ttc_tokens: int
    """Completion tokens of every call."""
    max_prompt_tokens: int
    truncated: int
    failed: int
    stopped: int
    budget_exhausted: Literal["max_ttc_tokens", "max_seconds"] | None
    settings: dict[str, Any]
    """The run's resolved settings (`PaCoReContext` with the graph's defaults)."""


class PaCoReInput(TypedDict):
    """What a caller passes: a chat, like any chat-model step."""

    messages: Annotated[list[AnyMessage], add_chat_messages]


class PaCoReOutput(TypedDict):
    """The chat with the answer appended, and the run's record (which a parent graph gets
    only if it declares ``pacore``)."""

    messages: Annotated[list[AnyMessage], add_chat_messages]
    # Not checkpointed: the DeltaChannel's writes store the trajectories already.
    pacore: Annotated[PaCoReRun | None, UntrackedValue(dict)]


class PaCoReState(PaCoReOutput, total=False):
    """The full state; ``prepare`` resets it at the start of each run."""

    round_vector: list[int]
    """K = [K_1, ..., K_R], final 1 included."""
    round: int
    """The round in progress (1-based)."""
    references: list[str] | None
    """The M the next round is sent (after compact, the round's; the one state key a
    person edits besides ``messages``); None sends the caller's messages unchanged."""
    # DeltaChannels store each write once; no checkpoint stores earlier ones again.
    trajectories: Annotated[
        list[Trajectory], DeltaChannel(add_trajectories, snapshot_frequency=1000)
    ]
    rounds_done: Annotated[
        list[RoundSummary], DeltaChannel(merge_round_summaries, list, snapshot_frequency=1000)
    ]
    started_at: float
    """Unix time; ``max_seconds`` counts from it."""
    budget_exhausted: Literal["max_ttc_tokens", "max_seconds"] | None
    retry: list[int]
    """Failed indices of the round in progress that a resumed run asks again."""
    run_id: str
    settings: dict[str, Any]
    """`run_settings`; a resume must match them."""
