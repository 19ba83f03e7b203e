"""Compaction C: what of a trajectory the next round sees, and in what order."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

Compaction = Callable[[str], str]
"""A compaction rule: the trajectory's response content in, its message to later rounds out
(`full_compaction` alone also reads the thinking returned apart: `compaction_input`)."""


def reference_compaction(content: str) -> str:
    """The reference rule: the text after the last ``</think>``, or all of it if there is none."""
    _, sep, tail = content.rpartition("</think>")
    return tail if sep else content


def boxed_answer_compaction(content: str) -> str:
    """Keeps only the final ``\\boxed{...}`` of the conclusion, braces balanced; ``""``
    (dropped from M) without one."""
    conclusion = reference_compaction(content)
    start = conclusion.rfind("\\boxed{")
    while start != -1:
        depth = 0
        for end in range(start + len("\\boxed"), len(conclusion)):
            depth += {"{": 1, "}": -1}.get(conclusion[end], 0)
            if depth == 0:
                return conclusion[start : end + 1]
        # Unbalanced (truncated) box: try an earlier one.
        start = conclusion.rfind("\\boxed{", 0, start)
    return ""


def full_compaction(content: str) -> str:
    """No compaction (the paper's ablation, Figure 4 right): the whole trajectory, thinking
    included, so only ``context_limit`` bounds the synthesis prompt."""
    return content


def compaction_input(rule: Compaction, content: str, reasoning: str | None) -> str:
    """What ``rule`` reads of a trajectory: its content; for `full_compaction`, thinking the
    backend returned apart (``reasoning_content``) goes back in front as ``<think>...</think>``."""
    if rule is full_compaction and reasoning:
        return f"<think>{reasoning}</think>{content}"
    return content


COMPACTIONS: dict[str, Compaction] = {
    "reference": reference_compaction,
    "boxed": boxed_answer_compaction,
    "full": full_compaction,
}
"""Compaction rules by name, for the CLI and per-run context."""


def resolve_compaction(rule: str | Compaction) -> Compaction:
    """A compaction callable from a name in `COMPACTIONS` (else ValueError) or a callable."""
    if callable(rule):
        return rule
    try:
        return COMPACTIONS[rule]
    except KeyError:
        raise ValueError(
            f"unknown compaction {rule!r}: use one of {', '.join(COMPACTIONS)} or a callable"
        ) from None


T = TypeVar("T")


def order_references(items: Sequence[T], content: Callable[[T], str], seed: int = 42) -> list[T]:
    """The reference's order of M, as a new list: ``items`` sorted by the length of their
    ``content``, then shuffled by a fresh ``Random(seed)``."""
    ordered = sorted(items, key=lambda item: len(content(item)))
    random.Random(seed).shuffle(ordered)
    return ordered
