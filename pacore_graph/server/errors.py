"""Errors as OpenAI error objects, ``{"error": {"message", "type", "code", "param"}}``: one
status, type and code per failure and a one-line message without secrets. Statuses follow
OpenAI, and the IETF Idempotency-Key draft for a reused key (422)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import openai
import redis.exceptions
from starlette.responses import JSONResponse

from pacore_graph import errors as pacore_errors
from pacore_graph.checkpoints.errors import ThreadLostError
from pacore_graph.secrets import redact


@dataclass(eq=False)
class ApiError(Exception):
    """A request's failure as the client sees it."""

    status: int
    message: str
    _: KW_ONLY
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

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
    """The run was cancelled (``--cancel-on-disconnect``, or the server is shutting down)."""


class IdempotencyConflictError(pacore_errors.ThreadConflictError):
    """An Idempotency-Key already names another request (other messages or settings)."""


def one_line(text: str) -> str:
    """The first non-empty line of ``text``."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _upstream(message: str, code: str = "upstream_error") -> ApiError:
    return ApiError(502, message, type="upstream_error", code=code)


def api_error(exc: BaseException) -> ApiError:
    """The client's view of an exception raised by validating or running a request."""
    if isinstance(exc, ApiError):
        return exc
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, pacore_errors.ThreadBusyError):
        return ApiError(409, text, code="thread_busy", headers={"Retry-After": "5"})
    if isinstance(exc, pacore_errors.ThreadConflictError):  # IdempotencyConflictError too
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
        return _upstream(f"the upstream model failed the run: {text}", "quorum_not_reached")
    if isinstance(exc, openai.APIConnectionError | pacore_errors.BackendUnreachableError):
        reason = one_line(str(exc.__cause__ or exc)) or text
        return _upstream(f"cannot reach the upstream model: {reason}", "upstream_unreachable")
    if isinstance(exc, openai.APIStatusError):
        return _upstream(f"the upstream model answered {exc.status_code}: {exc.message}")
    if isinstance(exc, ThreadLostError):
        return ApiError(503, text, type="server_error", code="checkpoint_store_lost_thread")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
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


__all__ = ["ApiError", "IdempotencyConflictError", "RunCancelledError", "api_error", "one_line"]
