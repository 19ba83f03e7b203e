"""Which model-call failures are worth another attempt, how long to wait for it, and how a
final failure is described."""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from collections.abc import Sequence

import openai
from langgraph.types import RetryPolicy, default_retry_on

from pacore_graph.errors import CallTimeoutError, MalformedResponseError, ReplyTooLargeError
from pacore_graph.secrets import redact_url


def should_retry(exc: Exception) -> bool:
    """True for failures a retry can fix: 5xx, 408, 409, 429, timeouts, refused or reset
    connections, and a reply that was no chat completion."""
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
"""Five attempts, as the reference retries, with exponential backoff and jitter (`retry_wait`)."""


def refused(exc: BaseException | None) -> bool:
    """True when a refused connection caused ``exc``: nothing listens at the endpoint."""
    for _ in range(9):  # down the cause chain, cut short should it loop
        if exc is None or isinstance(exc, ConnectionRefusedError):
            break
        exc = exc.__cause__ or exc.__context__
    return isinstance(exc, ConnectionRefusedError)


def _retries(policy: RetryPolicy, exc: Exception) -> bool:
    retry_on = policy.retry_on
    if isinstance(retry_on, type | Sequence):  # as LangGraph reads it
        return isinstance(exc, retry_on if isinstance(retry_on, type) else tuple(retry_on))
    return bool(retry_on(exc))


MAX_RETRY_AFTER = 120.0
"""The longest ``Retry-After`` honoured, so a misconfigured server cannot park a run."""


def retry_after(exc: Exception) -> float:
    """Seconds the server asked to wait (``Retry-After``: seconds or an HTTP date), at most
    `MAX_RETRY_AFTER`; 0 when it asked for nothing."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = 0.0
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def retry_wait(policy: RetryPolicy | None, exc: Exception, attempt: int) -> float | None:
    """Seconds to wait after ``exc`` failed attempt ``attempt`` (1-based), or None when
    ``policy`` makes no other: the server's ``Retry-After``, else LangGraph's backoff. A
    refused connection is asked again once, soon: backing off would not start the server."""
    if policy is None or attempt >= policy.max_attempts or not _retries(policy, exc):
        return None
    if refused(exc):
        return None if attempt > 1 else policy.initial_interval
    if asked := retry_after(exc):
        return asked
    backoff = policy.initial_interval * policy.backoff_factor ** (attempt - 1)
    interval = min(policy.max_interval, backoff)
    return interval + random.uniform(0, 1) if policy.jitter else interval


def describe_failure(exc: BaseException) -> str:
    """One line naming a failed call's cause, e.g. ``"HTTP 400: context length exceeded"``."""
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
        where = f" at {redact_url(str(exc.request.url))}" if exc.request is not None else ""
        return f"connection failed: {type(cause).__name__}: {cause}".splitlines()[0] + where
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
