"""Which model-call failures are worth another attempt."""

from __future__ import annotations

import openai
from langgraph.types import RetryPolicy, default_retry_on


def should_retry(exc: Exception) -> bool:
    """True for failures a retry can fix: 5xx, 429, timeouts, refused or reset connections.

    A 4xx other than 408/409/429 (a bad request, a context-length error, a bad key)
    fails the same way every time, so it is raised at once.
    """
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 409, 429)
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.OpenAIError):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return default_retry_on(exc)


DEFAULT_RETRY_POLICY = RetryPolicy(max_attempts=5, retry_on=should_retry)
"""Five attempts, as the reference retries, with LangGraph's exponential backoff and jitter."""
