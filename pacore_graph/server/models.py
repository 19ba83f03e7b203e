"""Model names: the OpenAI ``model`` string picks PaCoRe's round vector (``pacore``,
``pacore-low``, ``pacore-32x4``, ...; the table: docs/serve.md, "Model names")."""

from __future__ import annotations

import re
import time
from typing import Any

from pacore_graph.errors import InvalidRoundsError
from pacore_graph.rounds import PRESETS, resolve_rounds
from pacore_graph.server.errors import ApiError

PREFIX = "pacore"
_VECTOR = re.compile(r"[0-9]+(?:x[0-9]+)*")
_CREATED = int(time.time())


def _unknown(name: str, why: str = "") -> ApiError:
    return ApiError(
        404,
        f"The model '{name}' does not exist{': ' + why if why else ''}. Use pacore, "
        f"pacore-low, pacore-medium, pacore-high, or explicit rounds like pacore-32x4 "
        "(GET /v1/models lists them).",
        code="model_not_found",
        param="model",
    )


def model_rounds(name: str, default: list[int]) -> list[int]:
    """The round vector (final 1 included) that ``name`` runs; ``default`` is ``pacore``'s.

    Raises:
        ApiError: 404 ``model_not_found``: not a name of docs/serve.md, or a bad vector.
    """
    text = name.strip().lower()
    if text == PREFIX:
        return list(default)
    head, sep, rest = text.partition("-")
    if head != PREFIX or not sep or not (rest in PRESETS or _VECTOR.fullmatch(rest)):
        raise _unknown(name)
    try:
        return resolve_rounds(rest if rest in PRESETS else [int(k) for k in rest.split("x")])
    except InvalidRoundsError as exc:
        raise _unknown(name, str(exc)) from None


def model_object(name: str, rounds: list[int]) -> dict[str, Any]:
    """A ``/v1/models`` entry; ``pacore.rounds`` names the vector it runs (an extension)."""
    return {
        "id": name,
        "object": "model",
        "created": _CREATED,
        "owned_by": "pacore-graph",
        "pacore": {"rounds": rounds, "trajectories": sum(rounds)},
    }


def listed_models(default: list[int]) -> list[dict[str, Any]]:
    """What ``GET /v1/models`` lists: the bare name and the presets (explicit vectors are
    accepted but not enumerable)."""
    names = [PREFIX, *(f"{PREFIX}-{preset}" for preset in PRESETS)]
    return [model_object(name, model_rounds(name, default)) for name in names]


__all__ = ["PREFIX", "listed_models", "model_object", "model_rounds"]
