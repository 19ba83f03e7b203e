"""Grading: extract a response's answer, check it with math-verify, fall back to string match,
and group answers into votes for majority voting and answer agreement."""

from __future__ import annotations

import functools
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pacore_graph.compaction import boxed_answer_compaction, reference_compaction
from pacore_graph.eval._deps import require

GraderName = Literal["math-verify", "string"]

_ANSWER_PREFIX = re.compile(
    r"^(?:final\s+answer|answer|the\s+(?:final\s+)?answer\s+is)\s*[:：]?\s*", re.IGNORECASE
)
_WORDS = re.compile(r"[A-Za-z][A-Za-z '\-]*[A-Za-z]")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_TEXT_MACRO = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


@dataclass(frozen=True)
class Extracted:
    """A response's answer as written (the ``\\boxed{}`` content or the final line)."""

    text: str
    source: Literal["boxed", "final_line"]

    @property
    def target(self) -> str:
        """What math-verify parses: the box, or the whole final line (it finds the math)."""
        return f"\\boxed{{{self.text}}}" if self.source == "boxed" else self.text


@dataclass(frozen=True)
class Grade:
    """The verdict on one response: its extracted answer (None without one), whether it
    matches the ground truth, and the check that decided (None without an answer)."""

    answer: str | None
    correct: bool
    grader: GraderName | None


def extract_answer(response: str) -> Extracted | None:
    """The answer of a response: its last ``\\boxed{}``, else its last non-empty line, in its
    conclusion (after the last ``</think>``), the only part that reaches the reader."""
    conclusion = reference_compaction(response or "")
    if boxed := boxed_answer_compaction(conclusion):
        inner = boxed[len("\\boxed{") : -1].strip()
        return Extracted(inner, "boxed") if inner else None
    line = next((line.strip() for line in reversed(conclusion.splitlines()) if line.strip()), "")
    line = line.replace("**", "").strip("# ")  # markdown emphasis and headings
    line = _ANSWER_PREFIX.sub("", line).strip().removesuffix(".").strip().strip("$").strip()
    return Extracted(line, "final_line") if line else None


def normalize(text: str) -> str:
    """The string-match form: no TeX text macros, ``$``, spacing, case, thousands commas
    or trailing period."""
    text = _TEXT_MACRO.sub(r"\1", text.strip())
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\ ", "$"):
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = re.sub(r"\s+", "", text).rstrip(".").lower()
    return text.replace(",", "") if _THOUSANDS.match(text) else text


def _is_words(text: str) -> bool:
    # math-verify reads a word as a product of symbols ("Paris" == "sirap").
    return bool(_WORDS.fullmatch(text.strip()))


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which only the main thread may set.
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=65536)
def _parse(target: str) -> tuple[Any, ...]:
    math_verify = require("math_verify", "grading")
    try:
        return tuple(math_verify.parse(target, parsing_timeout=_timeout()))
    except Exception:  # a parser failure means "cannot tell", not a crash of the eval
        return ()


def _verify(gold: str, extracted: Extracted) -> bool | None:
    """math-verify's verdict, or None when either side does not parse as math."""
    if _is_words(gold) or _is_words(extracted.text):
        return None
    gold_parsed = _parse(gold if ("$" in gold or "\\boxed" in gold) else f"\\boxed{{{gold}}}")
    answer_parsed = _parse(extracted.target)
    if not gold_parsed or not answer_parsed:
        return None
    math_verify = require("math_verify", "grading")
    try:
        return bool(
            math_verify.verify(list(gold_parsed), list(answer_parsed), timeout_seconds=_timeout())
        )
    except Exception:
        return None


def grade(response: str, gold: str) -> Grade:
    """Grades a response against the ground truth: math-verify when it parses both sides,
    else (or when it says no) a `normalize`d string match, so a text answer such as ``Paris``
    is not lost. The deciding check is recorded."""
    extracted = extract_answer(response)
    if extracted is None:
        return Grade(None, False, None)
    verdict = _verify(gold, extracted)
    if verdict:
        return Grade(extracted.text, True, "math-verify")
    if normalize(extracted.text) == normalize(gold):
        return Grade(extracted.text, True, "string")
    return Grade(extracted.text, False, "string" if verdict is None else "math-verify")


def vote_key(extracted: Extracted | None) -> str | None:
    """The answer's vote, equal for equivalent answers (``391``, ``391.0``; ``0.5``,
    ``\\frac{1}{2}``; ``x+1``, ``1+x``), None for no answer: numbers by value, other math by
    sympy's canonical form, words and what math-verify cannot parse by `normalize`."""
    if extracted is None:
        return None
    if not _is_words(extracted.text) and (parsed := _parse(extracted.target)):
        value = parsed[0]
        if getattr(value, "is_number", False):
            try:
                return f"num:{float(value):.10g}"
            except (TypeError, ValueError):
                pass
        return f"math:{value}"
    return f"text:{normalize(extracted.text)}"


def majority(keys: Sequence[str | None]) -> tuple[str | None, int]:
    """The most common vote and its count (ties: the first seen); no-answers never win."""
    counts = Counter(k for k in keys if k is not None)
    return counts.most_common(1)[0] if counts else (None, 0)


def agreement(keys: Sequence[str | None]) -> float | None:
    """Fraction of the votes (no-answers included) that equal the majority vote."""
    return majority(keys)[1] / len(keys) if keys else None


CROSS_CHECK_MARKERS = ("reference", r"ref\.?\s*#?\d+")
"""The cross-checking markers counted by default (Figure 5, left): regexes matched
case-insensitively at a word start, each match one marker: ``reference`` (also
``Reference 2``, ``references``) and ``Ref 3`` / ``ref. 3`` / ``ref #3``."""


def cross_checks(text: str, markers: Sequence[str] = CROSS_CHECK_MARKERS) -> int:
    """How many cross-checking markers ``text`` holds (see `CROSS_CHECK_MARKERS`)."""
    pattern = r"\b(?:" + "|".join(f"(?:{m})" for m in markers) + ")"  # `re` caches it
    return len(re.findall(pattern, text, re.IGNORECASE)) if markers else 0
