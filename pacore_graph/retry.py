"""Which model-call failures are worth another attempt, and how a final failure is described."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Sequence

import openai
from langgraph.types import RetryPolicy, default_retry_on

from pacore_graph.errors import CallTimeoutError, MalformedResponseError, ReplyTooLargeError


def should_retry(exc: Exception) -> bool:
    """True for failures a retry can fix: 5xx, 429, timeouts (a call past its deadline
    included: `CallTimeoutError`), refused or reset connections, and a reply that was no
    chat completion (`MalformedResponseError`: not JSON, no choices, ...; a proxy or a
    server restarting mid-reply).

    A 4xx other than 408/409/429 (a bad request, a context-length error, a bad key)
    fails the same way every time, so it is not retried; nor is a reply past
    ``max_reply_bytes`` (`ReplyTooLargeError`): asking again gives the same reply.
    """
    if isinstance(exc, ReplyTooLargeError):
        return False
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 409, 429)
    if isinstance(exc, MalformedResponseError):
        return True
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return True  # APIConnectionError includes APITimeoutError
    if isinstance(exc, openai.OpenAIError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError | json.JSONDecodeError):
        return True
    return default_retry_on(exc)


DEFAULT_RETRY_POLICY = RetryPolicy(max_attempts=5, retry_on=should_retry)
"""Five attempts, as the reference retries, with LangGraph's exponential backoff and jitter."""


def _retries(policy: RetryPolicy, exc: Exception) -> bool:
    retry_on = policy.retry_on
    if isinstance(retry_on, type):
        return isinstance(exc, retry_on)
    if isinstance(retry_on, Sequence):  # as LangGraph reads it
        return isinstance(exc, tuple(retry_on))
    return bool(retry_on(exc))


def final_attempt(policy: RetryPolicy | None, exc: Exception, attempt: int) -> bool:
    """True when ``policy`` will not run the node again after ``exc`` failed ``attempt``
    (1-based; a node reads it from ``runtime.execution_info.node_attempt``)."""
    if policy is None or not _retries(policy, exc):
        return True
    return attempt >= policy.max_attempts


MAX_RETRY_AFTER = 120.0
"""The longest ``Retry-After`` honoured, so a misconfigured server cannot park a run."""


def retry_after(exc: Exception) -> float:
    """Seconds the server asked to wait (``Retry-After``), at most ``MAX_RETRY_AFTER``.

    LangGraph's backoff does not read the header, so the node waits this long before it
    raises; the policy's own backoff follows.
    """
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:  # the other form: an HTTP date
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 0.0
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def describe_failure(exc: BaseException) -> str:
    """One line naming a failed call's cause, e.g. ``"HTTP 400: context length exceeded"``,
    ``"call exceeded its 3 s deadline"``, ``"malformed reply: no choices"`` or ``"reply too
    large: over 8 MiB (max_reply_bytes)"``."""
    if isinstance(exc, CallTimeoutError | MalformedResponseError | ReplyTooLargeError):
        return str(exc).splitlines()[0]
    if isinstance(exc, openai.APIStatusError):
        message = re.sub(r"^Error code: \d+ - ", "", exc.message)
        return f"HTTP {exc.status_code}: {message}".splitlines()[0]
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        # langchain-openai re-raises the SDK's error wrapped in its own: name the root cause.
        cause: BaseException = exc
        while isinstance(cause, openai.APIConnectionError) and cause.__cause__ is not None:
            cause = cause.__cause__
        return f"connection failed: {type(cause).__name__}: {cause}".splitlines()[0]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
