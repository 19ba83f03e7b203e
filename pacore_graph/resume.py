"""What a resume must match: a thread's unfinished run continues only under the settings it
started with, so no answer ever mixes two runs' settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from typing import Any

from pacore_graph.context import PaCoReContext
from pacore_graph.errors import ThreadConflictError
from pacore_graph.rounds import resolve_rounds

BOUNDS = frozenset({"max_k", "max_trajectories", "max_input_chars"})
"""Settings that decide only whether a run may start: no part of a run's identity."""


def run_settings(settings: PaCoReContext) -> dict[str, Any]:
    """The resolved settings of a run as plain data, without the `BOUNDS`; a callable is
    kept as its qualified name, so the checkpoint holds no code."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        if f.name in BOUNDS:
            continue
        value = getattr(settings, f.name)
        if f.name == "rounds" and value is not None:
            value = resolve_rounds(value)  # "32,4" and [32, 4] are the same run
        elif callable(value):
            value = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', value)}"
        out[f.name] = value
    return out


def settings_key(settings: dict[str, Any]) -> str:
    """A short digest of `run_settings`, which each trajectory task carries."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_run(started: dict[str, Any] | str, settings: PaCoReContext) -> None:
    """ThreadConflictError unless ``settings`` are those the run ``started`` with (its
    `run_settings`, which name what differs, or their `settings_key`)."""
    now = run_settings(settings)
    if isinstance(started, str):
        changed = "" if started == settings_key(now) else "other settings"
    else:
        diff = [
            f"{k} {started[k]!r} -> {now[k]!r}" for k in now if started.get(k, now[k]) != now[k]
        ]
        changed = f"other settings ({', '.join(diff)})" if diff else ""
    if changed:
        raise ThreadConflictError(
            f"this thread's unfinished run started with {changed}: resume it with the same "
            "settings, or use a new thread id"
        )
