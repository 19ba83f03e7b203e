"""What an OpenAI-compatible server sends back, checked and cleaned before LangChain reads it.

A server restarting, a proxy in between, or a server that is merely "compatible" can
answer 200 with something that is no chat completion: no ``choices``, a JSON list,
``"message": null``, a number as content. `checked_completion` and `checked_chunk` raise
`MalformedResponseError` for those, naming what is wrong in one line, so the graph
retries them rather than failing on a ``TypeError`` deep in LangChain, or recording an
empty answer that never was one.

They also clean what would break later, at this one boundary: a token count that is no
count (negative, not a number) makes the reply's usage unknown, so no budget counts it;
a lone surrogate (``"\\ud800"`` in the JSON, which no UTF-8 output can encode) becomes
U+FFFD, so records, Redis and stdout take every reply.
"""

from __future__ import annotations

import re
from typing import Any

from pacore_graph.errors import MalformedResponseError

_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"

_REASONING_KEYS = ("reasoning_content", "reasoning")
"""Where servers put the separated thinking: vLLM's reasoning parsers said
``reasoning_content``; newer vLLM (and OpenRouter) say ``reasoning``."""


def reasoning(message: Any) -> str | None:
    """The thinking of a response message or stream delta (a dict or an SDK object)."""
    for key in _REASONING_KEYS:
        # An SDK object keeps fields it does not declare as attributes too.
        value = message.get(key) if isinstance(message, dict) else getattr(message, key, None)
        if isinstance(value, str) and value:
            return value
    return None


def clean_text(value: Any) -> Any:
    """``value`` (a JSON value) with every lone surrogate replaced by U+FFFD; the same object
    when there is none, so the common case copies nothing.

    An ASCII string (``str.isascii`` is O(1)) cannot hold one, so only non-ASCII strings
    are searched.
    """
    if type(value) is str:
        if value.isascii() or _SURROGATE.search(value) is None:
            return value
        return _SURROGATE.sub(_REPLACEMENT, value)
    if type(value) is dict:
        copy: dict[Any, Any] | None = None
        for key, item in value.items():
            new = clean_text(item) if type(item) in (str, dict, list) else item
            if new is not item:
                if copy is None:
                    copy = dict(value)
                copy[key] = new
        return value if copy is None else copy
    if type(value) is list:
        items: list[Any] | None = None
        for i, item in enumerate(value):
            new = clean_text(item) if type(item) in (str, dict, list) else item
            if new is not item:
                if items is None:
                    items = list(value)
                items[i] = new
        return value if items is None else items
    return value


def _count(value: Any) -> int | None:
    """A token count as a non-negative int; None when it is no count."""
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def clean_usage(usage: Any) -> dict[str, Any] | None:
    """``usage`` as LangChain can read it, or None (unknown) when it is no object or one of
    its counts is present but no count (negative, not a number); the same object when it
    needs no cleaning.

    A server that garbles one count is not trusted for the others: the whole usage is
    unknown, and unknown counts never enter a budget. An invalid ``total_tokens`` alone
    is recomputed (it is the sum of the others); absent counts stay absent (LangChain
    reads them as 0).
    """
    if not isinstance(usage, dict):
        return None
    prompt, completion, total = (usage.get(k) for k in _COUNTS)
    if all(type(v) is int and v >= 0 for v in (prompt, completion, total)) and all(
        isinstance(usage.get(k), dict | None) for k in _DETAILS
    ):
        return usage  # the common case, untouched
    clean = dict(usage)
    for key, value in (("prompt_tokens", prompt), ("completion_tokens", completion)):
        if value is not None:
            if (count := _count(value)) is None:
                return None
            clean[key] = count
    if total is not None:
        count = _count(total)
        if count is None:
            count = clean.get("prompt_tokens", 0) + clean.get("completion_tokens", 0)
        clean["total_tokens"] = count
    for key in _DETAILS:  # the base class reads them with .get()
        if not isinstance(clean.get(key), dict | None):
            del clean[key]
    return clean


_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_DETAILS = ("prompt_tokens_details", "completion_tokens_details")


_JSON_KINDS = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _kind(value: Any) -> str:
    """A JSON value's type as JSON names it, for messages."""
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _is_content(content: Any) -> bool:
    """Text, or content parts (strings and objects) as LangChain's messages take them."""
    return isinstance(content, str) or (
        isinstance(content, list) and all(isinstance(p, str | dict) for p in content)
    )


def _check_tool_calls(tool_calls: Any) -> None:
    if tool_calls is not None and not (
        isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)
    ):
        raise MalformedResponseError("malformed reply: tool_calls is not a list of objects")


def checked_completion(data: Any) -> dict[str, Any]:
    """A non-streamed reply's JSON, checked: its usage cleaned (`clean_usage`) and its lone
    surrogates replaced (`clean_text`); the same object when nothing needed cleaning.

    ``content: null`` is an answer only beside tool calls, separated thinking (a reply cut
    while thinking) or a refusal; alone it is no answer at all, not an empty one.

    Raises:
        MalformedResponseError: ``data`` is no chat completion.
    """
    if not isinstance(data, dict):
        raise MalformedResponseError(f"malformed reply: a JSON {_kind(data)}, not an object")
    choices = data.get("choices")
    if not choices:
        raise MalformedResponseError("malformed reply: no choices")
    if not isinstance(choices, list):
        raise MalformedResponseError(f"malformed reply: choices is a {_kind(choices)}")
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedResponseError(f"malformed reply: a choice is a {_kind(choice)}")
        message = choice.get("message")
        if message is None:
            raise MalformedResponseError("malformed reply: no message")
        if not isinstance(message, dict):
            raise MalformedResponseError(f"malformed reply: the message is a {_kind(message)}")
        content = message.get("content")
        if content is None:
            if not (
                message.get("tool_calls")
                or message.get("function_call")
                or message.get("refusal")
                or reasoning(message)
            ):
                raise MalformedResponseError("malformed reply: no content")
        elif not _is_content(content):
            raise MalformedResponseError(f"malformed reply: the content is a {_kind(content)}")
        _check_tool_calls(message.get("tool_calls"))
    if "usage" in data and (usage := clean_usage(data["usage"])) is not data["usage"]:
        data = {**data, "usage": usage}
    return clean_text(data)


def checked_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """One stream chunk's JSON, checked and cleaned as `checked_completion` does.

    A chunk without choices (the usage chunk) or with a null delta is well-formed: the
    base class reads them as such, and a stream that never finishes raises
    `IncompleteResponseError` at its end.

    Raises:
        MalformedResponseError: ``chunk`` is no chat completion chunk.
    """
    choices = chunk.get("choices")
    if choices:
        if type(choices) is not list:
            raise MalformedResponseError(f"malformed reply: choices is a {_kind(choices)}")
        choice = choices[0]  # the only one the base class reads
        if type(choice) is not dict:
            raise MalformedResponseError(f"malformed reply: a choice is a {_kind(choice)}")
        if "delta" not in choice:
            raise MalformedResponseError("malformed reply: a stream chunk without a delta")
        delta = choice["delta"]
        if delta is not None:
            if type(delta) is not dict:
                raise MalformedResponseError(f"malformed reply: a delta is a {_kind(delta)}")
            content = delta.get("content")
            if content is not None and type(content) is not str and not _is_content(content):
                raise MalformedResponseError(f"malformed reply: the content is a {_kind(content)}")
            _check_tool_calls(delta.get("tool_calls"))
    usage = chunk.get("usage")
    if usage is not None and (clean := clean_usage(usage)) is not usage:
        chunk = {**chunk, "usage": clean}
    return clean_text(chunk)


def undecodable(exc: ValueError) -> MalformedResponseError:
    """The error for a reply (or a stream event) that is no JSON, or no UTF-8."""
    what = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not JSON"
    return MalformedResponseError(f"malformed reply: {what} ({exc})")
