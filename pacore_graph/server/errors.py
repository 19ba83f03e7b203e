"""Errors as OpenAI error objects: ``{"error": {"message", "type", "code", "param"}}``.

Every failure a request can meet maps to one status, type and code here, with a one-line
message from which secrets are removed. Statuses follow OpenAI where it has the case
(401, 404 for an unknown model, 429, 400 with ``context_length_exceeded``) and the IETF
Idempotency-Key draft for a reused key (422).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import openai
from starlette.responses import JSONResponse

from pacore_graph import errors as pacore_errors
from pacore_graph.checkpoints.errors import ThreadLostError
from pacore_graph.secrets import redact


class ApiError(Exception):
    """A request's failure as the client sees it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self, secrets: Iterable[str] = ()) -> dict[str, Any]:
        """The OpenAI error object, in one line and without secrets."""
        return {
            "error": {
                "message": one_line(redact(self.message, secrets)),
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, secrets: Iterable[str] = ()) -> JSONResponse:
        return JSONResponse(self.body(secrets), status_code=self.status, headers=self.headers)


class RunCancelledError(Exception):
    """The run was cancelled (its client hung up under ``--cancel-on-disconnect``, or the
    server is shutting down)."""


class IdempotencyConflictError(pacore_errors.ThreadConflictError):
    """An Idempotency-Key already names another request (other messages or settings)."""


def one_line(text: str) -> str:
    """The first non-empty line of ``text``."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# Being added by the per-thread lease (arun_thread): another process holds the thread.
_THREAD_BUSY: type[Exception] | None = getattr(pacore_errors, "ThreadBusyError", None)

_REDIS_ERRORS: tuple[type[BaseException], ...]
try:
    import redis.exceptions

    _REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
except ImportError:  # pragma: no cover - redis is a dependency
    _REDIS_ERRORS = ()


def api_error(exc: BaseException) -> ApiError:
    """The client's view of an exception raised by validating or running a request."""
    if isinstance(exc, ApiError):
        return exc
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, IdempotencyConflictError):
        return ApiError(422, text, code="idempotency_key_reused")
    if _THREAD_BUSY is not None and isinstance(exc, _THREAD_BUSY):
        return ApiError(409, text, code="thread_busy", headers={"Retry-After": "5"})
    if isinstance(exc, pacore_errors.ThreadConflictError):
        return ApiError(422, text, code="idempotency_key_reused")
    if isinstance(exc, pacore_errors.ContextLimitError):
        return ApiError(400, text, code="context_length_exceeded")
    if isinstance(exc, pacore_errors.BudgetExhaustedError):
        # A retry runs into the same budget: a 4xx, which clients do not retry.
        return ApiError(422, text, code="budget_exhausted")
    if isinstance(exc, pacore_errors.InvalidRoundsError):
        return ApiError(400, text, code="invalid_rounds")
    if isinstance(exc, pacore_errors.InvalidInputError):
        return ApiError(400, text, code="invalid_messages", param="messages")
    if isinstance(exc, pacore_errors.InvalidSettingsError | TypeError | ValueError):
        return ApiError(400, text, code="invalid_pacore_settings", param="pacore")
    if isinstance(exc, pacore_errors.QuorumError):
        return ApiError(
            502,
            f"the upstream model failed the run: {text}",
            type="upstream_error",
            code="quorum_not_reached",
        )
    if isinstance(exc, openai.APIConnectionError | pacore_errors.BackendUnreachableError):
        cause = exc.__cause__ or exc
        return ApiError(
            502,
            f"cannot reach the upstream model: {one_line(str(cause)) or text}",
            type="upstream_error",
            code="upstream_unreachable",
        )
    if isinstance(exc, openai.APIStatusError):
        return ApiError(
            502,
            f"the upstream model answered {exc.status_code}: {exc.message}",
            type="upstream_error",
            code="upstream_error",
        )
    if isinstance(exc, ThreadLostError):
        return ApiError(503, text, type="server_error", code="checkpoint_store_lost_thread")
    if _REDIS_ERRORS and isinstance(exc, _REDIS_ERRORS):
        # Finished trajectories are in Redis already: the same request resumes the run.
        return ApiError(
            503,
            f"the checkpoint store is unreachable ({text}); retry the request to resume",
            type="server_error",
            code="checkpoint_store_unavailable",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, RunCancelledError | asyncio.CancelledError):
        return ApiError(
            503,
            "the run was cancelled; retry the request with its Idempotency-Key to resume",
            type="server_error",
            code="run_cancelled",
        )
    return ApiError(500, f"internal error ({type(exc).__name__})", type="server_error")


__all__ = [
    "ApiError",
    "IdempotencyConflictError",
    "RunCancelledError",
    "api_error",
    "one_line",
]
