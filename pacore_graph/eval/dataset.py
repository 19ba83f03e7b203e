"""Load and validate an eval file: the reference's JSONL rows or the plain ``problem``/``answer``
form, every line checked before any model call."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages

SAMPLE = Path(__file__).with_name("data") / "sample.jsonl"  # eight word problems, to try it

_ROLES = {"system", "developer", "user", "assistant", "tool"}
_MAX_LISTED = 5  # bad lines named in the one-line error; the rest are counted


class DatasetError(ValueError):
    """One or more lines of an eval file are unusable; each is named as ``file:line: why``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:_MAX_LISTED])
        more = len(problems) - _MAX_LISTED
        super().__init__(shown + (f"; and {more} more bad line(s)" if more > 0 else ""))


@dataclass(frozen=True)
class Problem:
    """One problem to evaluate: the row's ``id`` (the results' ``request_id``), its chat as
    ``{"role", "content"}`` dicts, the ground-truth answer as text, its ``category`` and the
    1-based line of the file it came from."""

    id: Any
    messages: list[dict[str, Any]]
    answer: str
    category: str | None = None
    line: int = 0
    key: str = field(init=False)
    """A Redis-safe name of the id and the messages: an edited problem gets a new thread."""

    def __post_init__(self) -> None:
        digest = hashlib.sha256(
            json.dumps(self.messages, sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()[:10]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(self.id))[:40]
        object.__setattr__(self, "key", f"{slug}-{digest}")

    def chat(self) -> list[BaseMessage]:
        """The messages as LangChain messages, as the graph takes them."""
        return convert_to_messages(self.messages)


def _answer(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _parse_line(text: str, line: int) -> Problem | str:
    """The `Problem` of a line of the file, or what is wrong with it."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    has_messages, has_problem = "messages" in row, "problem" in row
    if has_messages == has_problem:
        return (
            "give either 'messages' with 'ground_truth': {'answer'} (the reference form) "
            "or 'problem' with 'answer' (the plain form)"
            if not has_messages
            else "has both 'messages' and 'problem': use one form"
        )
    category = row.get("category")
    if category is not None and not isinstance(category, str):
        return f"'category' must be a string, got {category!r}"
    if has_messages:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list"
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES or "content" not in m:
                return f"messages[{i}] must be {{'role': one of {sorted(_ROLES)}, 'content': ...}}"
        if not any(m["role"] == "user" and m["content"] for m in messages):
            return "'messages' has no non-empty user message (the problem)"
        try:
            convert_to_messages(messages)
        except (ValueError, TypeError, NotImplementedError) as exc:
            return f"bad 'messages': {exc}"
        truth = row.get("ground_truth")
        answer = _answer(truth.get("answer")) if isinstance(truth, dict) else None
        if answer is None:
            return "missing 'ground_truth': {'answer': ...} (a non-empty string or number)"
    else:
        text = row["problem"]
        if not isinstance(text, str) or not text.strip():
            return "'problem' must be a non-empty string"
        answer = _answer(row.get("answer"))
        if answer is None:
            return "missing 'answer' (a non-empty string or number)"
        messages = [{"role": "user", "content": text}]
    problem_id = row.get("id", line)
    if not isinstance(problem_id, str | int) or isinstance(problem_id, bool):
        return f"'id' must be a string or an integer, got {problem_id!r}"
    return Problem(id=problem_id, messages=messages, answer=answer, category=category, line=line)


def load_problems(path: str | Path, *, limit: int | None = None) -> list[Problem]:
    """The problems of a JSONL eval file, in order, every line checked first; ``limit`` keeps
    the first ones. A line is the reference's form (``id``, ``messages``,
    ``ground_truth.answer``, ``category``) or ``problem``, ``answer`` (a missing ``id`` is the
    line number); blank lines are skipped.

    Raises:
        DatasetError: Some lines are bad (each named ``file:line: why``), ids repeat,
            or the file holds no problem.
        OSError: The file cannot be read.
    """
    path = Path(path)
    problems: list[Problem] = []
    bad: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            parsed = _parse_line(text, line)
            if isinstance(parsed, str):
                bad.append(f"{path}:{line}: {parsed}")
                continue
            if (first := seen.get(str(parsed.id))) is not None:
                bad.append(f"{path}:{line}: id {parsed.id!r} repeats line {first}")
                continue
            seen[str(parsed.id)] = line
            problems.append(parsed)
    if bad:
        raise DatasetError(bad)
    if not problems:
        raise DatasetError([f"{path}: no problems in the file"])
    return problems[:limit] if limit is not None else problems
