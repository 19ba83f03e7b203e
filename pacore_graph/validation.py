"""Every setting checked before any model call, in one line naming it: the pydantic
constraints of `PaCoReContext`, `ServeSettings` and the CLI's options, in the same words
for the graph, the CLI and the server. The bounds' defaults are explained in the README's
settings table."""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from langchain_core.messages import BaseMessage
from pydantic import ConfigDict, ValidationError, create_model

from pacore_graph.context import INT64_MAX, PaCoReContext
from pacore_graph.errors import InvalidInputError, InvalidSettingsError
from pacore_graph.messages import message_text
from pacore_graph.rounds import resolve_rounds

_KINDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a JSON object",
    str: "text",
}


def rule(hint: Any, bounds: Mapping[str, Any] | None = None) -> str:
    """What a value of the annotated type ``hint`` must be: ``a number in (0, 1]``, ``an
    integer >= 1``, ``one of error, drop_longest``."""
    found = dict(bounds or {})
    while True:
        if get_origin(hint) is Annotated:
            hint, *meta = get_args(hint)
            for item in meta:  # a FieldInfo holds its annotated_types constraints in .metadata
                for c in getattr(item, "metadata", [item]):
                    found |= {k: getattr(c, k) for k in ("ge", "gt", "le", "lt") if hasattr(c, k)}
        elif get_origin(hint) in (Union, types.UnionType):
            members = [a for a in get_args(hint) if a is not type(None)]
            if len(members) > 1:
                return " or ".join(rule(m, found) for m in members)
            hint = members[0]
        else:
            break
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, get_args(hint)))
    if get_origin(hint) is Callable:
        return "a callable"
    words = _KINDS.get(get_origin(hint) or hint, getattr(hint, "__name__", str(hint)))
    if found.get("le") == INT64_MAX:
        del found["le"]  # said only when a value breaks it (`SettingsCheck.check`)
    low = ("[", ">=", found["ge"]) if "ge" in found else ("(", ">", found.get("gt"))
    high = ("]", "<=", found["le"]) if "le" in found else (")", "<", found.get("lt"))
    if low[2] is not None and high[2] is not None:
        return f"{words} in {low[0]}{low[2]}, {high[2]}{high[0]}"
    return " ".join([words, *(f"{op} {v}" for _, op, v in (low, high) if v is not None)])


class SettingsCheck:
    """The constraints of the ``Annotated`` fields of the dataclass ``cls``, checked strictly
    (no ``"0.5"`` for a number, no ``True`` for a count, no NaN or infinity)."""

    def __init__(self, cls: type) -> None:
        hints = get_type_hints(cls, include_extras=True)
        self.hints = {name: hint for name, hint in hints.items() if get_origin(hint) is Annotated}
        config = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)
        self._model = create_model(  # type: ignore[call-overload]
            cls.__name__, __config__=config, **{n: (h, None) for n, h in self.hints.items()}
        )

    def check(self, values: Mapping[str, Any]) -> None:
        """Raises `InvalidSettingsError` naming the first of ``values`` that breaks its field's
        constraints, in one line (None passes: it takes a default)."""
        given = {k: v for k, v in values.items() if k in self.hints and v is not None}
        try:
            self._model.model_validate(given)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0])
            if error["type"] == "value_error":  # a validator's own words
                raise InvalidSettingsError(f"{name} {error['ctx']['error']}") from None
            words = rule(self.hints[name])
            if error.get("ctx", {}).get("le") == INT64_MAX:
                words += " and below 2**63"
            shown = repr(given[name])
            shown = shown if len(shown) < 80 else shown[:76] + "..."
            raise InvalidSettingsError(f"{name} must be {words}, got {shown}") from None

    def check_instance(self, instance: Any) -> None:
        """`check` on the fields of a dataclass instance."""
        self.check({f.name: getattr(instance, f.name) for f in fields(instance)})


CONTEXT = SettingsCheck(PaCoReContext)
"""The constraints of every `PaCoReContext` field but ``rounds`` (`resolve_rounds`')."""


def check_settings(settings: PaCoReContext) -> list[int]:
    """Checks every setting of a run but those left None; returns its round vector.
    InvalidRoundsError for ``rounds`` that is no round vector or is over ``max_k`` or
    ``max_trajectories``; InvalidSettingsError, naming it, for any other impossible value."""
    CONTEXT.check_instance(settings)
    return resolve_rounds(
        # not `or`: 0, "" and [] are bad vectors, not "the default"
        "low" if settings.rounds is None else settings.rounds,
        max_k=settings.max_k,
        max_trajectories=settings.max_trajectories,
    )


def check_input(messages: Sequence[BaseMessage], settings: PaCoReContext) -> None:
    """Raises `InvalidInputError` for a chat with more text than ``max_input_chars`` (images
    are not counted: a server bounds those)."""
    limit = settings.max_input_chars
    if limit is None:
        return
    size = sum(len(message_text(m)) for m in messages)
    if size > limit:
        raise InvalidInputError(
            f"the input chat has {size:,} characters of text, above max_input_chars = "
            f"{limit:,}: shorten it, or raise the max_input_chars setting (--max-input-chars)"
        )


__all__ = ["CONTEXT", "SettingsCheck", "check_input", "check_settings", "rule"]
