"""A ``POST /v1/chat/completions`` body, checked and mapped onto a PaCoRe run
(docs/serve.md, "The request")."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pacore_graph.context import PaCoReContext, did_you_mean, merge_context
from pacore_graph.errors import InvalidInputError
from pacore_graph.messages import last_user_index
from pacore_graph.resume import run_settings
from pacore_graph.rounds import resolve_rounds
from pacore_graph.server.errors import ApiError, one_line
from pacore_graph.server.models import model_rounds
from pacore_graph.validation import check_settings

FORWARDED = (
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "top_k",
    "min_p",
    "repetition_penalty",
)
"""Sampling fields sent on to every call of the run (in its ``extra_body``)."""

TOP_LEVEL = ("rounds", "temperature", "top_p", "max_tokens")
"""`PaCoReContext` fields a request sets outside its ``pacore`` object."""

BOUNDS = ("max_k", "max_trajectories", "max_input_chars", "max_ttc_tokens", "max_seconds")
"""Settings a request may lower but not raise, where the server sets them."""

_TOOLS = "PaCoRe answers in text: tool calls are not supported"
_FUNCTIONS = "PaCoRe answers in text: function calls are not supported"
_LOGPROBS = "log probabilities are not supported (an answer is synthesized over runs)"
_UNSUPPORTED: dict[str, tuple[str, Any]] = {
    "tools": (_TOOLS, []),
    "functions": (_FUNCTIONS, []),
    "tool_choice": (_TOOLS, "none"),
    "function_call": (_FUNCTIONS, "none"),
    "response_format": ("only the text response format is supported", None),
    "logprobs": (_LOGPROBS, False),
    "top_logprobs": (_LOGPROBS, None),
    "audio": ("audio output is not supported", None),
    "modalities": ("only text output is supported", ["text"]),
    "prediction": ("predicted outputs are not supported", None),
    "web_search_options": ("web search is not supported", None),
    "seed": (
        "a round's K calls share one prompt, so one sampling seed would make them the "
        "same trajectory; PaCoRe's reference-order seed is pacore.seed",
        None,
    ),
}
"""Fields PaCoRe cannot honour, and why: refused unless null or the value that asks for
nothing."""
_FIELDS = {f.name for f in fields(PaCoReContext)}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class ChatRequest(BaseModel):
    """The OpenAI request fields the server reads; any other field is kept to be checked."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1)
    pacore: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunSpec:
    """A checked request: what to run, and how to answer."""

    model: str  # as the client sent it (echoed in the response)
    rounds: list[int]
    messages: list[BaseMessage]
    context: dict[str, Any]  # the run's `PaCoReContext` over the graph's defaults
    fingerprint: str  # of the messages and resolved settings: what an Idempotency-Key means
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    progress: bool = False


def _validation_error(exc: ValidationError) -> ApiError:
    error = exc.errors()[0]
    if error["type"] == "json_invalid":
        return ApiError(
            400,
            f"We could not parse the JSON body of your request: {error['msg']}",
            code="invalid_json",
        )
    where = ".".join(str(part) for part in error["loc"])
    return ApiError(
        400, f"{where or 'body'}: {error['msg']}", code="invalid_request", param=where or None
    )


def _check_supported(request: ChatRequest) -> None:
    for name, (why, harmless) in _UNSUPPORTED.items():
        value = (request.model_extra or {}).get(name)
        if value is None or value == harmless:
            continue
        if name == "response_format" and isinstance(value, dict) and value.get("type") == "text":
            continue
        raise ApiError(400, f"{name} is not supported: {why}", code="unsupported_parameter")


def _bad_setting(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_pacore_settings")


def _pacore_settings(request: ChatRequest) -> tuple[dict[str, Any], bool]:
    """The ``pacore`` object's run settings (checked later with the rest) and ``progress``."""
    given = dict(request.pacore or {})
    progress = given.pop("progress", False)
    if not isinstance(progress, bool):
        raise ApiError(400, "pacore.progress must be true or false", param="pacore.progress")
    if unknown := sorted(set(given) - _FIELDS):
        hint = did_you_mean(unknown, _FIELDS)
        raise _bad_setting("pacore", f"unknown PaCoRe setting(s): {', '.join(unknown)}{hint}")
    if misplaced := [f"pacore.{name}" for name in TOP_LEVEL if name in given]:
        where = "the model name (e.g. pacore-32x4)" if "rounds" in given else "top level"
        raise _bad_setting(
            misplaced[0], f"{misplaced[0]}: set it in {where}, not in the pacore object"
        )
    if given.get("review"):
        raise _bad_setting(
            "pacore.review",
            "pacore.review: a chat completion cannot pause for a person; review a run in "
            "Studio, from Python or with pacore solve --review",
        )
    return given, progress


def fingerprint(messages: list[BaseMessage], settings: dict[str, Any]) -> str:
    """A digest of a run's input and resolved settings."""
    chat = [[m.type, m.content, getattr(m, "name", None)] for m in messages]
    text = json.dumps([chat, settings], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_bounds(context: dict[str, Any], defaults: PaCoReContext) -> None:
    """A request may lower the server's `BOUNDS` (those it sets), never raise them."""
    for name in BOUNDS:
        limit, value = getattr(defaults, name), context.get(name)
        # A value that is no number is refused by check_settings, in its words.
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if limit is not None and number and value > limit:
            raise _bad_setting(
                f"pacore.{name}",
                f"pacore.{name}: {value} is above this server's {limit} (a request may lower "
                "it, not raise it)",
            )


def parse_request(
    body: bytes, defaults: PaCoReContext, *, max_trajectories: int, max_n: int
) -> RunSpec:
    """Checks a request body and maps it onto a PaCoRe run over ``defaults`` (the graph's
    settings), before anything runs.

    Raises:
        ApiError: 400 for a malformed or unsupported request or bad settings, 404 for an
            unknown model.
    """
    try:
        request = ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    _check_supported(request)
    rounds = model_rounds(request.model, resolve_rounds(defaults.rounds or "low"))
    n = request.n or 1
    if n > max_n:
        raise ApiError(400, f"n is at most {max_n} on this server, got {n}", param="n")
    if sum(rounds) * n > max_trajectories:
        raise ApiError(
            400,
            f"{request.model} x n={n} asks for {sum(rounds) * n} trajectories; this server "
            f"runs at most {max_trajectories} per request",
            param="model",
            code="too_many_trajectories",
        )
    try:
        messages = convert_to_messages(request.messages)
        last_user_index(messages)
    except (ValueError, TypeError, NotImplementedError) as exc:
        if isinstance(exc, InvalidInputError):
            raise
        raise InvalidInputError(f"bad messages: {one_line(str(exc))}") from None

    context, progress = _pacore_settings(request)
    context["rounds"] = rounds
    if len({request.max_tokens, request.max_completion_tokens} - {None}) > 1:
        raise ApiError(
            400, "max_tokens and max_completion_tokens differ: give one", param="max_tokens"
        )
    sampling = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_completion_tokens or request.max_tokens,
    }
    context.update({k: v for k, v in sampling.items() if v is not None})
    extra = request.model_extra or {}
    forwarded = {name: extra[name] for name in FORWARDED if extra.get(name) is not None}
    if forwarded or "extra_body" in context:
        context["extra_body"] = {
            **(defaults.extra_body or {}),
            **forwarded,
            **(context.get("extra_body") or {}),
        }
    _check_bounds(context, defaults)
    resolved = merge_context(defaults, context)
    check_settings(resolved)  # every value, in the words of the graph and the CLI
    return RunSpec(
        model=request.model,
        rounds=rounds,
        messages=messages,
        context=context,
        fingerprint=fingerprint(messages, run_settings(resolved)),
        n=n,
        stream=bool(request.stream),
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        progress=progress,
    )


__all__ = ["BOUNDS", "FORWARDED", "ChatRequest", "RunSpec", "fingerprint", "parse_request"]
