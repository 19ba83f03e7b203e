"""A trajectory's record: built from a model's reply (finished) or from why there is none
(failed, stopped), and read back as totals."""

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
    index: int
    """0-based position in its round."""
    content: str
    reasoning: str | None
    """Thinking the backend returned separately."""
    message: str
    """The compacted content later rounds see."""
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
    return Trajectory(
        round=round_number, index=index, content=content, reasoning=reasoning_of(message),
        message=compaction(content), finish_reason=finish,
        truncated=finish in ("length", "max_tokens"), prompt_tokens=usage.get("input_tokens"),
        completion_tokens=usage.get("output_tokens"), latency_s=latency_s, status="finished",
        error=None, message_id=message_id,
    )  # fmt: skip


def unfinished_record(
    round_number: int, index: int, status: Status, error: str, *, latency_s: float = 0.0
) -> Trajectory:
    """The record of a call that failed for good or was stopped."""
    return Trajectory(
        round=round_number, index=index, content="", reasoning=None, message="",
        finish_reason=None, truncated=False, prompt_tokens=None, completion_tokens=None,
        latency_s=latency_s, status=status, error=error, message_id=None,
    )  # fmt: skip


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
    first ``</think>``. Other content is held (unless the server separates thinking) until
    ``</think>``, which may close a block the chat template opened, or the end. Whitespace
    around each part is dropped, so any chunking gives the same pieces."""

    __slots__ = ("_held", "_lead", "_mode", "_pending", "_separated", "_space")

    def __init__(self) -> None:
        self._mode: Literal["start", "think", "hold", "reply"] = "start"
        self._pending = ""  # what may start a tag split across chunks
        self._held: list[str] = []  # content not known yet to be answer or thinking
        self._lead = True  # at the start of a part, where whitespace is dropped
        self._space = ""  # trailing whitespace, sent only if more text follows
        self._separated = False

    def feed(self, content: str, reasoning: str | None = None) -> tuple[str, str]:
        """The next chunk in; ``(answer, thinking)`` to send now out."""
        if reasoning:
            self._separated = True
        thinking = reasoning or ""
        if not content:
            return "", thinking
        text, answer = self._pending + content, ""
        self._pending = ""
        while text:
            if self._mode == "start":
                text = text.lstrip()
                if text.startswith(_OPEN):
                    self._mode, text = "think", text[len(_OPEN) :]
                elif _OPEN.startswith(text):  # maybe "<think>", split across chunks
                    self._pending, text = text, ""
                else:
                    self._mode = "reply" if self._separated else "hold"
            elif self._mode == "reply":
                answer += self._trimmed(text)
                text = ""
            elif self._mode == "think":
                head, closed, text = self._until_close(text)
                thinking += self._trimmed(head)
                if closed:
                    self._mode, self._lead, self._space = "reply", True, ""
            else:
                head, closed, text = self._until_close(text)
                self._held.append(head)
                if closed:
                    thinking += "".join(self._held).strip()
                    self._held = []
                    self._mode, self._lead, self._space = "reply", True, ""
        return answer, thinking

    def close(self) -> tuple[str, str]:
        """The end of the reply: what is still held back, as ``(answer, thinking)``."""
        pending, self._pending = self._pending, ""
        if self._mode == "start":  # a lone "<thi": not a tag
            return pending, ""
        if self._mode == "think":  # never closed: part of a "</think>" is thinking
            return "", self._trimmed(pending) if pending else ""
        if self._mode == "hold":  # no "</think>" came: it was all answer
            held, self._held = "".join(self._held) + pending, []
            return held.strip(), ""
        return "", ""

    def _until_close(self, text: str) -> tuple[str, bool, str]:
        """``text`` up to ``</think>``, whether it was there, and what follows; an end that
        may begin a ``</think>`` waits in ``_pending``."""
        head, closed, tail = text.partition(_CLOSE)
        if closed:
            return head, True, tail
        ends = range(min(len(_CLOSE) - 1, len(text)), 0, -1)
        keep = next((n for n in ends if _CLOSE.startswith(text[-n:])), 0)
        if keep:
            head, self._pending = text[:-keep], text[-keep:]
        return head, False, ""

    def _trimmed(self, text: str) -> str:
        """``text`` without its part's leading whitespace, its trailing whitespace held."""
        if self._lead:
            text = text.lstrip()
            if not text:
                return ""
            self._lead = False
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
