"""A trajectory's record: built from a model's reply (finished) or from why there is none
(failed, stopped), and read back as totals. The nodes, `pacore_graph.record` and the eval
harness all build and read records here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from langchain_core.messages import BaseMessage
from typing_extensions import TypedDict

from pacore_graph.compaction import Compaction, reference_compaction
from pacore_graph.messages import message_text

Status = Literal["finished", "failed", "stopped"]


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
    status: Status
    """"failed": the call failed for good (after retries); "stopped": a budget ran out first."""
    error: str | None
    """Why it failed or stopped (secrets redacted)."""


def reasoning_of(message: BaseMessage) -> str | None:
    """The thinking a chat model returned beside the content, if any.

    ``additional_kwargs["reasoning_content"]`` (or ``"reasoning"``, newer vLLM) as
    OpenAI-compatible models put it, else reasoning/thinking content blocks.
    """
    for key in ("reasoning_content", "reasoning"):
        value = message.additional_kwargs.get(key)
        if isinstance(value, str) and value:
            return value
    if isinstance(message.content, list):
        parts = [
            b.get("reasoning") or b.get("thinking") or ""
            for b in message.content
            if isinstance(b, dict) and b.get("type") in ("reasoning", "thinking")
        ]
        return "".join(parts) or None
    return None


def output_tokens(message: BaseMessage) -> int | None:
    """Completion tokens a reply reports; None (unknown) when it reports none, or a count
    that is no count (negative, not an integer), which no budget may count."""
    usage = getattr(message, "usage_metadata", None) or {}
    count = usage.get("output_tokens")
    return count if type(count) is int and count >= 0 else None


def finished_record(
    round_number: int,
    index: int,
    message: BaseMessage,
    *,
    compaction: Compaction = reference_compaction,
    latency_s: float = 0.0,
) -> Trajectory:
    """The record of a call that returned ``message``."""
    content = message_text(message)
    usage = getattr(message, "usage_metadata", None) or {}
    meta = message.response_metadata or {}
    finish = meta.get("finish_reason") or meta.get("stop_reason")
    return Trajectory(
        round=round_number,
        index=index,
        content=content,
        reasoning=reasoning_of(message),
        message=compaction(content),
        finish_reason=finish,
        truncated=finish in ("length", "max_tokens"),
        prompt_tokens=usage.get("input_tokens"),
        completion_tokens=usage.get("output_tokens"),
        latency_s=latency_s,
        status="finished",
        error=None,
    )


def unfinished_record(
    round_number: int, index: int, status: Status, error: str, *, latency_s: float = 0.0
) -> Trajectory:
    """The record of a call that failed for good or was stopped by a budget."""
    return Trajectory(
        round=round_number,
        index=index,
        content="",
        reasoning=None,
        message="",
        finish_reason=None,
        truncated=False,
        prompt_tokens=None,
        completion_tokens=None,
        latency_s=latency_s,
        status=status,
        error=error,
    )


def is_finished(trajectory: Trajectory) -> bool:
    """True when the call returned (records from before ``status`` existed count as finished)."""
    return trajectory.get("status", "finished") == "finished"


def latest_trajectories(trajectories: Iterable[Trajectory]) -> list[Trajectory]:
    """One record per (round, index), the latest: a retried trajectory supersedes its failure."""
    latest = {(t["round"], t["index"]): t for t in trajectories}
    return sorted(latest.values(), key=lambda t: (t["round"], t["index"]))


def status_counts(trajectories: Iterable[Trajectory]) -> Counter[str]:
    """How many records are finished, failed and stopped (absent statuses count 0)."""
    return Counter(t.get("status", "finished") for t in trajectories)


def usage_totals(trajectories: Iterable[Trajectory]) -> tuple[int, int]:
    """Effective TTC (all completion tokens) and the largest prompt of any call."""
    ttc, largest = 0, 0
    for t in trajectories:
        ttc += t["completion_tokens"] or 0
        largest = max(largest, t["prompt_tokens"] or 0)
    return ttc, largest


def split_thinking(trajectory: Trajectory) -> tuple[str, str | None]:
    """The reply without thinking, and the thinking (separated or inline ``<think>``)."""
    content = trajectory["content"]
    reply = reference_compaction(content)
    inline = content[: len(content) - len(reply)].removesuffix("</think>")
    inline = inline.strip().removeprefix("<think>").strip()
    return reply.strip(), trajectory["reasoning"] or inline or None


def final_trajectory(trajectories: Sequence[Trajectory], rounds: int) -> Trajectory | None:
    """The finished trajectory of the final round ``rounds``, if there is one."""
    return next((t for t in trajectories if t["round"] == rounds and is_finished(t)), None)


__all__ = [
    "Status",
    "Trajectory",
    "final_trajectory",
    "finished_record",
    "is_finished",
    "latest_trajectories",
    "output_tokens",
    "reasoning_of",
    "split_thinking",
    "status_counts",
    "unfinished_record",
    "usage_totals",
]
