"""The round vector K = [K_1, ..., K_R]: presets, validation, and the appended final round."""

from __future__ import annotations

from collections.abc import Sequence

from pacore_graph.errors import InvalidRoundsError

PRESETS: dict[str, tuple[int, ...]] = {"low": (4,), "medium": (16,), "high": (32, 4)}
"""The reference's presets; the final ``[1]`` round is appended to each."""

RoundsSpec = str | int | Sequence[int]
"""A preset name, a single K, a comma-separated string such as ``"32,4"``, or a list of ints."""


def resolve_rounds(spec: RoundsSpec) -> list[int]:
    """Turns a user's round spec into the full round vector, final ``1`` included.

    As in the reference pipeline, the user gives the exploration rounds and ``[1]`` is
    appended: ``4`` runs ``[4, 1]`` and ``"high"`` runs ``[32, 4, 1]``. A vector of two
    or more rounds that already ends in 1 is the paper's notation, final round included,
    and runs as written: ``"32,4,1"`` runs ``[32, 4, 1]``, not ``[32, 4, 1, 1]``.

    Args:
        spec: A preset (``"low"``, ``"medium"``, ``"high"``), an int, a string of
            comma-separated ints, or a sequence of ints.

    Returns:
        The round vector to run, ending with ``1``.

    Raises:
        InvalidRoundsError: The spec is empty, unknown, not integers, or has a K < 1.
    """
    if isinstance(spec, bool):
        raise InvalidRoundsError(f"rounds must be a preset or integers, got {spec!r}")
    if isinstance(spec, int):
        values: list[object] = [spec]
    elif isinstance(spec, str):
        text = spec.strip()
        if text.lower() in PRESETS:
            return [*PRESETS[text.lower()], 1]
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
        values = [int(p) for p in parts]
    elif isinstance(spec, Sequence):
        values = list(spec)
        if not values:
            raise InvalidRoundsError(
                "rounds is empty: give at least one exploration round, e.g. [4]"
            )
    else:
        raise InvalidRoundsError(f"rounds must be a preset or integers, got {type(spec).__name__}")
    rounds: list[int] = []
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int):
            raise InvalidRoundsError(f"rounds must be integers, got {k!r} in {spec!r}")
        if k < 1:
            raise InvalidRoundsError(f"every round needs K >= 1, got {k} in {spec!r}")
        rounds.append(k)
    if len(rounds) >= 2 and rounds[-1] == 1:
        return rounds
    return [*rounds, 1]
