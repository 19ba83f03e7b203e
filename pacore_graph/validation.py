"""Every run setting and the size of the input, checked before any model call, with the same
one-line errors wherever a run starts: the ``prepare`` node (each run's merged settings),
`create_pacore_graph` (the graph's defaults, at build time) and the CLI (before the
endpoint is probed).

The bounds are pacore-graph's, not the reference's (which had none); their defaults in
`DEFAULTS`, and why:

- ``max_k`` = 1024: 32x the paper's widest round (``high`` = [32, 4]) and 4x the widest
  this project benchmarks (K=[256, 16]; PaCoRe's scaling studies stay within a few
  hundred). LangGraph builds a round's K tasks in one step of the event loop and, when
  the run is cancelled, releases them one by one at a cost that grows with K squared:
  on 2 cores K=1024 starts its calls in ~0.4 s and cancels in ~0.1 s, K=4096 takes
  ~1.4 s and ~1 s, K=10,000 ~3 s and ~3 s, and ``--rounds 999999`` ran for minutes at
  690 MB before its first call.
- ``max_trajectories`` = 4096: four rounds of ``max_k``. Every trajectory's text stays in
  the run's state, its record and its checkpoint, so the total bounds a run's memory.
- ``max_input_chars`` = 1,000,000: ~330K tokens at the 3-characters-a-token estimate,
  2.5x the 131,072 tokens the reference lets a call generate: far more than a problem
  needs. Each of a round's K calls sends the chat whole, and each trajectory's task
  holds it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from pacore_graph.budget import check_budgets
from pacore_graph.compaction import COMPACTIONS
from pacore_graph.context import PaCoReContext
from pacore_graph.errors import InvalidInputError, InvalidSettingsError
from pacore_graph.messages import message_text
from pacore_graph.rounds import resolve_rounds

RESERVED_BODY_KEYS: dict[str, str] = {
    "messages": "PaCoRe writes each call's messages",
    "model": "the model is the backend's (--model)",
    "n": "a trajectory is one completion: raise K in rounds instead",
    "stream": "the backend decides whether a call streams",
    "stream_options": "the backend asks for the token usage that budgets and the record count",
    "temperature": "use the temperature setting",
    "top_p": "use the top_p setting",
    "max_tokens": "use the max_tokens setting",
}
"""Request fields ``extra_body`` may not set, and why: it is merged over the request body,
so it would replace what PaCoRe sends (a ``messages`` key replaced every prompt) or slip a
sampling value past its setting's check and the run's record."""

_CHOICES: dict[str, tuple[str, ...]] = {
    "empty_references": ("template", "problem"),
    "on_context_overflow": ("error", "drop_longest"),
}


def _number(name: str, value: Any, ok: Callable[[float], bool], rule: str) -> None:
    if value is None:
        return
    # bool is an int to Python, but True is no temperature; NaN and inf pass every comparison
    # or fail it in ways a server would not agree with.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not ok(value)
    ):
        raise InvalidSettingsError(f"{name} must be a number {rule}, got {value!r}")


def _integer(name: str, value: Any, least: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidSettingsError(f"{name} must be an integer >= {least}, got {value!r}")


def check_extra_body(extra_body: Any) -> None:
    """Fails on an ``extra_body`` that is not a JSON object of extra fields.

    Raises:
        InvalidSettingsError: Not a dict, or a key of `RESERVED_BODY_KEYS`.
    """
    if extra_body is None:
        return
    if not isinstance(extra_body, dict):
        raise InvalidSettingsError(
            f"extra_body must be a JSON object of request fields, got {type(extra_body).__name__}"
        )
    for key in extra_body:
        if key in RESERVED_BODY_KEYS:
            raise InvalidSettingsError(f"extra_body cannot set {key!r}: {RESERVED_BODY_KEYS[key]}")


def check_settings(settings: PaCoReContext) -> list[int]:
    """Checks every setting of a run; returns its round vector.

    A field left None is not checked (it takes the graph's default, or has none).

    Raises:
        InvalidRoundsError: ``rounds`` is not a round vector, or is over ``max_k`` or
            ``max_trajectories``.
        InvalidSettingsError: A setting has an impossible value; the message names it.
    """
    for bound in ("max_k", "max_trajectories", "max_input_chars"):
        _integer(bound, getattr(settings, bound), 1)
    vector = resolve_rounds(
        # not `or`: 0, "" and [] are bad vectors, not "the default"
        "low" if settings.rounds is None else settings.rounds,
        max_k=settings.max_k,
        max_trajectories=settings.max_trajectories,
    )
    _number("temperature", settings.temperature, lambda v: v >= 0, ">= 0")
    _number("top_p", settings.top_p, lambda v: 0 < v <= 1, "in (0, 1]")
    _integer("max_tokens", settings.max_tokens, 1)
    _integer("context_limit", settings.context_limit, 1)
    # Random(-n) shuffles as Random(n): a negative seed would be a second name for one order.
    _integer("seed", settings.seed, 0)
    check_extra_body(settings.extra_body)
    compaction = settings.compaction
    if compaction is not None and not callable(compaction) and compaction not in COMPACTIONS:
        raise InvalidSettingsError(
            f"compaction must be one of {', '.join(COMPACTIONS)} or a callable, got {compaction!r}"
        )
    for name, allowed in _CHOICES.items():
        value = getattr(settings, name)
        if value is not None and value not in allowed:
            raise InvalidSettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if settings.drop_truncated is not None and not isinstance(settings.drop_truncated, bool):
        raise InvalidSettingsError(
            f"drop_truncated must be true or false, got {settings.drop_truncated!r}"
        )
    check_budgets(settings)
    _number("straggler_quantile", settings.straggler_quantile, lambda v: 0 < v <= 1, "in (0, 1]")
    _number("straggler_factor", settings.straggler_factor, lambda v: v >= 0, ">= 0")
    _number("straggler_min_seconds", settings.straggler_min_seconds, lambda v: v >= 0, ">= 0")
    return vector


def check_input(messages: Sequence[BaseMessage], settings: PaCoReContext) -> None:
    """Fails on an input chat with more text than ``max_input_chars`` (images not counted:
    a server bounds those).

    Raises:
        InvalidInputError: The chat is too large; names its size and the bound.
    """
    limit = settings.max_input_chars
    if limit is None:
        return
    size = sum(len(message_text(m)) for m in messages)
    if size > limit:
        raise InvalidInputError(
            f"the input chat has {size:,} characters of text, above max_input_chars = "
            f"{limit:,}: shorten it, or raise the max_input_chars setting (--max-input-chars)"
        )


__all__ = ["RESERVED_BODY_KEYS", "check_extra_body", "check_input", "check_settings"]
