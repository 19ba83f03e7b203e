"""What a run's answer looks like to an OpenAI client: a ChatCompletion, its stream chunks,
``usage`` (the whole run's test-time compute, replayed answers included) and the ``pacore``
extension with each run's `run_report` (docs/serve.md)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

from langchain_core.messages import AIMessage

from pacore_graph.record import run_record
from pacore_graph.server.runs import Run
from pacore_graph.state import PaCoReRun
from pacore_graph.trajectories import status_counts, usage_totals


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def record_of(state: dict[str, Any]) -> PaCoReRun:
    """The graph's ``pacore`` output, or rebuilt from a stored thread (it is not stored)."""
    return state.get("pacore") or run_record(state)


def answer_of(state: dict[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    """The answer's content, thinking, finish reason and message id."""
    message = state["messages"][-1]
    if not isinstance(message, AIMessage):
        raise RuntimeError("the run ended without an answer")
    content = message.content if isinstance(message.content, str) else message.text
    reasoning = message.additional_kwargs.get("reasoning_content") or None
    return content, reasoning, message.response_metadata.get("finish_reason"), message.id


_DROPPED: Final = ("dropped_empty", "dropped_truncated", "dropped_for_context")


def _rounds_detail(record: PaCoReRun) -> list[dict[str, Any]]:
    """Per round: K, outcomes, tokens, and what it passed on."""
    done = {summary["round"]: summary for summary in record.get("rounds_done") or []}
    detail = []
    for r, k in enumerate(record["round_vector"], start=1):
        batch = [t for t in record["trajectories"] if t["round"] == r]
        counts, (tokens, prompt) = status_counts(batch), usage_totals(batch)
        row: dict[str, Any] = {"round": r, "k": k}
        row |= {status: counts[status] for status in ("finished", "failed", "stopped")}
        row["truncated"] = sum(bool(t["truncated"]) for t in batch)
        row |= {"completion_tokens": tokens, "prompt_tokens": prompt}
        if (summary := done.get(r)) is not None:
            row["references"] = len(summary["references"])
            row |= {key: summary[key] for key in _DROPPED}
        detail.append(row)
    return detail


def run_report(run: Run, index: int) -> dict[str, Any]:
    """The ``pacore`` extension's entry for one finished run."""
    assert run.state is not None
    record = record_of(run.state)
    trajectories = record["trajectories"]  # the latest of each
    return {
        "index": index,
        "thread_id": run.thread_id,
        "thread_status": run.status,
        "round_vector": record["round_vector"],
        "ttc_tokens": record["ttc_tokens"],
        "max_prompt_tokens": record["max_prompt_tokens"],
        "prompt_tokens_total": sum(t["prompt_tokens"] or 0 for t in trajectories),
        "trajectories": len(trajectories),
        "failed": record["failed"],
        "stopped": record["stopped"],
        "truncated": record["truncated"],
        "budget_exhausted": record["budget_exhausted"],
        "seconds": round(run.seconds or 0.0, 3),
        "rounds": _rounds_detail(record),
    }


def _usage_of(reports: Sequence[dict[str, Any]]) -> dict[str, int]:
    """OpenAI ``usage`` over the runs of a response (``n`` choices add up)."""
    completion = sum(r["ttc_tokens"] for r in reports)
    prompt = sum(r["max_prompt_tokens"] for r in reports)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class Completion:
    """One response's identity (id, creation time, model) and its payloads."""

    def __init__(self, model: str, key: str | None = None) -> None:
        # A retried request (same key) answers under the same id.
        uid = uuid.uuid5(uuid.NAMESPACE_URL, key) if key else uuid.uuid4()
        self.id = f"chatcmpl-{uid.hex}"
        self.created = int(time.time())
        self.model = model

    def message(self, runs: Sequence[Run]) -> dict[str, Any]:
        """The non-streamed ChatCompletion of finished ``runs`` (one per choice)."""
        choices, reports = [], []
        for index, run in enumerate(runs):
            assert run.state is not None
            content, reasoning, finish, _ = answer_of(run.state)
            message = {"role": "assistant", "content": content, "reasoning_content": reasoning}
            choice = {"index": index, "message": message | {"refusal": None}, "logprobs": None}
            choices.append(choice | {"finish_reason": finish or "stop"})
            reports.append(run_report(run, index))
        return self._body(
            "chat.completion",
            system_fingerprint=None,
            choices=choices,
            usage=_usage_of(reports),
            pacore={"runs": reports},
        )

    def chunk(
        self,
        index: int,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        *,
        usage: bool = False,
        **extra: Any,
    ) -> str:
        """A ``chat.completion.chunk`` of choice ``index``, as JSON; ``usage=True`` adds
        ``"usage": null``, as OpenAI does when the client asked for the usage chunk."""
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return dumps(self._body(choices=[choice], **({"usage": None} if usage else {}), **extra))

    def usage_chunk(self, reports: Sequence[dict[str, Any]]) -> str:
        """The last chunk when the client asked for usage: no choices, the whole usage."""
        return dumps(
            self._body(choices=[], usage=_usage_of(reports), pacore={"runs": list(reports)})
        )

    def _body(self, kind: str = "chat.completion.chunk", /, **fields: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            **fields,
        }


__all__ = ["Completion", "answer_of", "dumps", "record_of", "run_report"]
