"""The round vector K = [K_1, ..., K_R]: presets, validation, and the appended final round."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from pacore_graph.errors import InvalidRoundsError

PRESETS: dict[str, tuple[int, ...]] = {"low": (4,), "medium": (16,), "high": (32, 4)}
"""The reference's presets; the final ``[1]`` round is appended to each."""

RoundsSpec = str | int | Sequence[int]


def resolve_rounds(
    spec: RoundsSpec, *, max_k: int | None = None, max_trajectories: int | None = None
) -> list[int]:
    """The round vector of a preset, an int, ``"32,4"`` or ints: the exploration rounds
    with ``[1]`` appended, unless two or more rounds already end in 1 (``"32,4,1"``).

    Raises:
        InvalidRoundsError: Not a round vector, or over ``max_k`` or ``max_trajectories``.
    """
    if isinstance(spec, bool):
        raise InvalidRoundsError(f"rounds must be a preset or integers, got {spec!r}")
    if isinstance(spec, int):
        values: list[object] = [spec]
    elif isinstance(spec, str):
        text = spec.strip()
        if text.lower() in PRESETS:
            return check_round_bounds([*PRESETS[text.lower()], 1], max_k, max_trajectories)
        if not text:
            raise InvalidRoundsError(
                f"rounds is empty: give a preset ({', '.join(PRESETS)}) or integers like 32,4"
            )
        parts = [part.strip() for part in text.split(",")]
        # isascii: str.isdigit() also accepts "¹", which int() rejects
        if not all(p and p.isascii() and p.lstrip("+-").isdigit() for p in parts):
            raise InvalidRoundsError(
                f"unknown rounds {spec!r}: use a preset ({', '.join(PRESETS)}) "
                "or comma-separated positive integers like 32,4"
            )
        try:
            values = [int(p) for p in parts]
        except ValueError:  # beyond int()'s 4300 digits: far above any bound
            raise InvalidRoundsError(
                f"rounds {text[:20]}... has a K of more than 4300 digits"
            ) from None
    elif isinstance(spec, Sequence):
        values = list(spec)
        if not values:
            raise InvalidRoundsError(
                "rounds is empty: give at least one exploration round, e.g. [4]"
            )
    else:
        raise InvalidRoundsError(f"rounds must be a preset or integers, got {type(spec).__name__}")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int):
            raise InvalidRoundsError(f"rounds must be integers, got {k!r} in {spec!r}")
        if k < 1:
            raise InvalidRoundsError(f"every round needs K >= 1, got {k} in {spec!r}")
    rounds = cast("list[int]", values)  # a new list, checked above
    if len(rounds) < 2 or rounds[-1] != 1:
        rounds.append(1)
    return check_round_bounds(rounds, max_k, max_trajectories)


def check_round_bounds(
    vector: list[int], max_k: int | None, max_trajectories: int | None
) -> list[int]:
    """``vector``, checked against ``max_k`` per round and ``max_trajectories`` in all;
    InvalidRoundsError over a bound."""
    if max_k is not None and (k := max(vector)) > max_k:
        raise InvalidRoundsError(
            f"round {vector.index(k) + 1} of {_shown(vector)} has K = {k}, above max_k = "
            f"{max_k}: raise the max_k setting (--max-k) to run it"
        )
    if max_trajectories is not None and (total := sum(vector)) > max_trajectories:
        raise InvalidRoundsError(
            f"rounds {_shown(vector)} run {total} trajectories, above max_trajectories = "
            f"{max_trajectories}: raise the max_trajectories setting (--max-trajectories) "
            "to run them"
        )
    return vector


def _shown(vector: list[int]) -> str:
    # A vector of thousands of rounds would make a line of kilobytes.
    return str(vector) if len(vector) <= 8 else f"[{', '.join(map(str, vector[:6]))}, ...]"
