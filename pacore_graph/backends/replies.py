"""What an OpenAI-compatible server sends back, checked and cleaned before LangChain reads it:
no chat completion raises `MalformedResponseError` (retried), a garbled token count makes
the usage unknown, a lone surrogate (no UTF-8 can encode it) becomes U+FFFD."""

from __future__ import annotations

import re
from typing import Any

from pacore_graph.errors import MalformedResponseError

_SURROGATE = re.compile("[\ud800-\udfff]")

_REASONING_KEYS = ("reasoning_content", "reasoning")  # newer vLLM and OpenRouter: reasoning
_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_DETAILS = ("prompt_tokens_details", "completion_tokens_details")


def reasoning(message: Any) -> str | None:
    """The thinking of a response message or stream delta (a dict or an SDK object)."""
    for key in _REASONING_KEYS:
        # An SDK object keeps fields it does not declare as attributes too.
        value = message.get(key) if isinstance(message, dict) else getattr(message, key, None)
        if isinstance(value, str) and value:
            return value
    return None


def clean_text(value: Any) -> Any:
    """``value`` (JSON) with lone surrogates as U+FFFD; the same object when there is none."""
    if type(value) is str:
        # str.isascii is O(1), and an ASCII string holds no surrogate.
        if value.isascii() or _SURROGATE.search(value) is None:
            return value
        return _SURROGATE.sub("\ufffd", value)
    if type(value) is dict:
        clean = {key: clean_text(item) for key, item in value.items()}
        return value if all(clean[k] is item for k, item in value.items()) else clean
    if type(value) is list:
        items = [clean_text(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def _count(value: Any) -> int | None:
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def clean_usage(usage: Any) -> dict[str, Any] | None:
    """``usage`` as LangChain can read it; None (unknown) when it is no object or a prompt or
    completion count is garbled. An invalid ``total_tokens`` is recomputed."""
    if not isinstance(usage, dict):
        return None
    prompt, completion, total = (usage.get(k) for k in _COUNTS)
    if all(type(v) is int and v >= 0 for v in (prompt, completion, total)) and all(
        isinstance(usage.get(k), dict | None) for k in _DETAILS
    ):
        return usage  # the common case, untouched
    # The base class reads the details with .get(): ones that are no object are left out.
    clean = {k: v for k, v in usage.items() if k not in _DETAILS or isinstance(v, dict | None)}
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
    return clean


_JSON_KINDS = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def _kind(value: Any) -> str:
    if type(value) in (int, float):
        return "number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _check_parts(message: dict[str, Any]) -> None:
    """The content is text or content parts (strings and objects), as LangChain's messages
    take it; tool_calls a list of objects."""
    content = message.get("content")
    if not (
        content is None
        or isinstance(content, str)
        or (isinstance(content, list) and all(isinstance(p, str | dict) for p in content))
    ):
        raise MalformedResponseError(f"malformed reply: the content is a {_kind(content)}")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not (
        isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)
    ):
        raise MalformedResponseError("malformed reply: tool_calls is not a list of objects")


def checked_completion(data: Any) -> dict[str, Any]:
    """A non-streamed reply's JSON, checked, its usage and text cleaned; ``content: null`` is
    an answer only beside tool calls, separated thinking or a refusal.

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
        if message.get("content") is None and not (
            message.get("tool_calls")
            or message.get("function_call")
            or message.get("refusal")
            or reasoning(message)
        ):
            raise MalformedResponseError("malformed reply: no content")
        _check_parts(message)
    if "usage" in data and (usage := clean_usage(data["usage"])) is not data["usage"]:
        data = {**data, "usage": usage}
    return clean_text(data)


def checked_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """One stream chunk's JSON, checked and cleaned as `checked_completion` does.

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
            _check_parts(delta)
    usage = chunk.get("usage")
    if usage is not None and (clean := clean_usage(usage)) is not usage:
        chunk = {**chunk, "usage": clean}
    return clean_text(chunk)


def undecodable(exc: ValueError) -> MalformedResponseError:
    """The error for a reply (or a stream event) that is no JSON, or no UTF-8."""
    what = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not JSON"
    return MalformedResponseError(f"malformed reply: {what} ({exc})")
