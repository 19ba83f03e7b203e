"""A trajectory's record: built from a model's reply (finished) or from why there is none
(failed, stopped), and read back as totals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from langchain_core.messages import BaseMessage
from typing_extensions import TypedDict

from pacore_graph.backends.replies import reasoning
from pacore_graph.compaction import Compaction, compaction_input, reference_compaction
from pacore_graph.messages import message_text

Status = Literal["finished", "failed", "stopped"]


class Trajectory(TypedDict):
    """One trajectory's record."""

    round: int
    index: int
    """0-based position in its round."""
    content: str
    reasoning: str | None
    """Thinking the backend returned separately."""
    message: str | None
    """The compacted content later rounds see; None where it is the content (`reference_text`)."""
    finish_reason: str | None
    truncated: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    status: Status
    """"failed": after retries; "stopped": by a budget or the straggler policy."""
    error: str | None
    """Why it failed or stopped (secrets redacted)."""
    message_id: str | None
    """The final round's: the id its reply streamed and the answer message take."""


def reasoning_of(message: BaseMessage) -> str | None:
    """The thinking a chat model returned beside the content, if any: in
    ``additional_kwargs`` (``reasoning_content``, ``reasoning``) or content blocks."""
    if (separated := reasoning(message.additional_kwargs)) is not None:
        return separated
    if isinstance(message.content, list):
        parts = [
            b.get("reasoning") or b.get("thinking") or ""
            for b in message.content
            if isinstance(b, dict) and b.get("type") in ("reasoning", "thinking")
        ]
        return "".join(parts) or None
    return None


def output_tokens(message: BaseMessage) -> int | None:
    """Completion tokens a reply reports; None when it reports none or no count."""
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
    message_id: str | None = None,
) -> Trajectory:
    """The record of a call that returned ``message`` (streamed under ``message_id``)."""
    content = message_text(message)
    usage = getattr(message, "usage_metadata", None) or {}
    meta = message.response_metadata or {}
    finish = meta.get("finish_reason") or meta.get("stop_reason")
    reasoning = reasoning_of(message)
    compacted = compaction(compaction_input(compaction, content, reasoning))
    return Trajectory(
        round=round_number,
        index=index,
        content=content,
        reasoning=reasoning,
        message=None if compacted == content else compacted,  # not the text twice
        finish_reason=finish,
        truncated=finish in ("length", "max_tokens"),
        prompt_tokens=usage.get("input_tokens"),
        completion_tokens=usage.get("output_tokens"),
        latency_s=latency_s,
        status="finished",
        error=None,
        message_id=message_id,
    )


def unfinished_record(
    round_number: int, index: int, status: Status, error: str, *, latency_s: float = 0.0
) -> Trajectory:
    """The record of a call that failed for good or was stopped."""
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
        message_id=None,
    )


def reference_text(trajectory: Trajectory) -> str:
    """What later rounds see of ``trajectory``: its compacted content."""
    message = trajectory["message"]
    return trajectory["content"] if message is None else message


def is_finished(trajectory: Trajectory) -> bool:
    return trajectory["status"] == "finished"


def latest_trajectories(trajectories: Iterable[Trajectory]) -> list[Trajectory]:
    """One record per (round, index), the latest: a retried trajectory supersedes its failure."""
    latest = {(t["round"], t["index"]): t for t in trajectories}
    return sorted(latest.values(), key=lambda t: (t["round"], t["index"]))


def status_counts(trajectories: Iterable[Trajectory]) -> Counter[str]:
    """How many records have each status."""
    return Counter(t["status"] for t in trajectories)


def usage_totals(trajectories: Sequence[Trajectory]) -> tuple[int, int]:
    """Effective TTC (all completion tokens) and the largest prompt of any call."""
    ttc = sum(t["completion_tokens"] or 0 for t in trajectories)
    return ttc, max((t["prompt_tokens"] or 0 for t in trajectories), default=0)


_OPEN, _CLOSE = "<think>", "</think>"


class ThinkingSplitter:
    """Splits a streamed reply into answer and thinking, never taking back what it sent.

    Thinking is what the server separated, or content from an opening ``<think>`` to the
    first ``</think>``. Other content is held until ``</think>``, which may close a block the
    chat template opened, or the end; it streams as answer at once where no block can be
    open (``hold=False``, or the server separates thinking). Whitespace around each part is
    dropped, so any chunking gives the same pieces."""

    __slots__ = ("_held", "_hold", "_lead", "_mode", "_pending", "_separated", "_space")

    def __init__(self, hold: bool = True) -> None:
        self._mode: Literal["start", "think", "hold", "reply"] = "start"
        self._pending = ""  # what may start a tag split across chunks
        self._held: list[str] = []  # content not known yet to be answer or thinking
        self._lead = True  # at the start of a part, where whitespace is dropped
        self._space = ""  # trailing whitespace, sent only if more text follows
        self._separated = False
        self._hold = hold

    @classmethod
    def after(cls, replies: Iterable[Trajectory]) -> ThinkingSplitter:
        """A splitter for the next reply of the model that gave ``replies``: it holds content
        unless one of them is complete and none has thinking (no chat template opens it)."""
        done = [t for t in replies if is_finished(t)]
        thinks = any(t["reasoning"] or _CLOSE in t["content"] for t in done)
        return cls(hold=thinks or all(t["truncated"] for t in done))

    def feed(self, content: str, reasoning: str | None = None) -> tuple[str, str]:
        """The next chunk in; ``(answer, thinking)`` to send now out."""
        self._separated = self._separated or bool(reasoning)
        text, answer, thinking = self._pending + content, "", reasoning or ""
        self._pending = ""
        while text:
            if self._mode == "start":
                text = text.lstrip()
                if text.startswith(_OPEN):
                    self._mode, text = "think", text[len(_OPEN) :]
                elif _OPEN.startswith(text):  # maybe "<think>", split across chunks
                    self._pending, text = text, ""
                else:
                    self._mode = "hold" if self._hold and not self._separated else "reply"
            elif self._mode == "reply":
                answer, text = answer + self._trimmed(text), ""
            else:  # "think" streams, "hold" keeps until it knows which it was
                head, closed, text = self._until_close(text)
                self._held.append(self._trimmed(head))
                if closed or self._mode == "think":
                    thinking, self._held = thinking + "".join(self._held), []
                if closed:
                    self._mode, self._lead, self._space = "reply", True, ""
        return answer, thinking

    def close(self) -> tuple[str, str]:
        """The end of the reply: what is still held back, as ``(answer, thinking)``. A lone
        ``"<thi"`` is answer; part of a ``</think>`` ends what it would have closed."""
        if self._mode == "start":
            return self._pending, ""
        part = self._trimmed(self._pending)
        # In "hold", no "</think>" came: it was all answer.
        return ("".join(self._held) + part, "") if self._mode == "hold" else ("", part)

    def _until_close(self, text: str) -> tuple[str, bool, str]:
        """``text`` up to ``</think>``, whether it was there, and what follows; an end that
        may begin a ``</think>`` waits in ``_pending``."""
        head, closed, tail = text.partition(_CLOSE)
        if not closed:
            keep = next((n for n in range(len(_CLOSE) - 1, 0, -1) if text.endswith(_CLOSE[:n])), 0)
            head, self._pending = text[: len(text) - keep], text[len(text) - keep :]
        return head, bool(closed), tail

    def _trimmed(self, text: str) -> str:
        """``text`` without its part's leading whitespace, its trailing whitespace held."""
        if self._lead:
            text = text.lstrip()
            self._lead = not text
        body = text.rstrip()
        if not body:
            self._space += text
            return ""
        out, self._space = self._space + body, text[len(body) :]
        return out


def split_thinking(trajectory: Trajectory) -> tuple[str, str | None]:
    """The reply without thinking, and the thinking, as `ThinkingSplitter` streams them."""
    splitter = ThinkingSplitter()
    answer, thinking = splitter.feed(trajectory["content"], trajectory["reasoning"])
    rest, more = splitter.close()
    return answer + rest, (thinking + more) or None


def final_trajectory(trajectories: Sequence[Trajectory], rounds: int) -> Trajectory | None:
    """The finished trajectory of the final round ``rounds``, if there is one."""
    return next((t for t in trajectories if t["round"] == rounds and is_finished(t)), None)
