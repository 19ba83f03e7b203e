"""Errors raised by pacore-graph, each naming the problem in one line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx2
import openai


class PaCoReError(Exception):
    """Base class of every error pacore-graph raises on purpose."""


class InvalidRoundsError(PaCoReError, ValueError):
    """The round vector is empty, not integers, zero/negative or an unknown preset."""


class InvalidInputError(PaCoReError, ValueError):
    """The input messages have no usable user message."""


class ContextLimitError(PaCoReError):
    """A synthesis prompt does not fit the configured context limit."""


class BackendUnreachableError(PaCoReError, ConnectionError):
    """The model endpoint cannot be reached."""


class QuorumError(PaCoReError):
    """Too few trajectories of a round finished; resuming the thread retries the failed ones."""

    def __init__(
        self, round_number: int, finished: int, k: int, needed: int, errors: Sequence[str | None]
    ):
        self.round, self.finished, self.k, self.needed = round_number, finished, k, needed
        counts = Counter(error or "unknown error" for error in errors).most_common(3)
        self.causes = "; ".join(f"{n}× {cause}" for cause, n in counts) or "none recorded"
        super().__init__(
            f"round {round_number}: {finished} of {k} trajectories finished, {needed} needed "
            f"(min_success); causes: {self.causes}"
        )


class BudgetExhaustedError(PaCoReError):
    """A budget (``max_ttc_tokens`` or ``max_seconds``) ran out before any trajectory finished."""


class InvalidSettingsError(PaCoReError, ValueError):
    """A run setting has an impossible value (a negative budget, a quorum above 1.0, ...)."""


class IncompleteResponseError(PaCoReError, ConnectionError):
    """A streamed answer stopped before its end; retried like a dropped connection."""


class ThreadConflictError(PaCoReError):
    """A thread holds an unfinished run of another question, or of other settings."""


class DamagedThreadError(PaCoReError):
    """A checkpointed thread lost part of what it stored (``missing``), so it is not resumed."""

    def __init__(self, thread_id: str, missing: Sequence[str]) -> None:
        self.thread_id = thread_id
        self.missing = tuple(missing)
        super().__init__(
            f"thread {thread_id} is damaged: {', '.join(self.missing)} missing (evicted, "
            "deleted, or lost when Redis restarted without persistence), so it cannot be "
            f"resumed: start it over with delete_thread({thread_id!r}) (pacore solve "
            "--restart) or use a new thread id"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.thread_id, self.missing))


class ThreadBusyError(PaCoReError):
    """Another run holds the thread's lease: one writer per thread."""

    def __init__(self, message: str, thread_id: str, holder: str | None = None):
        self.thread_id = thread_id
        self.holder = holder  # e.g. "pid 4242 on host-a"; None: nobody by now
        super().__init__(message)


class LeaseLostError(ThreadBusyError):
    """This run's lease on its thread lapsed or was taken by another run."""

    def __init__(self, thread_id: str):
        super().__init__(
            f"thread {thread_id}: this run lost its lease (it stalled past the lease's TTL, "
            "or another run took the thread over) and stopped; none of its writes landed since",
            thread_id,
        )


class MalformedResponseError(PaCoReError):
    """A 200 reply that is no chat completion, e.g. ``"malformed reply: no choices"``;
    retried, as a restarting server or a proxy garbles replies."""


def size_text(n: int) -> str:
    """``n`` bytes in words: ``"8 MiB"``, ``"64 KiB"``, ``"1000 bytes"``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


class ReplyTooLargeError(PaCoReError, openai.OpenAIError):
    """A reply past the model's ``max_reply_bytes``, stopped while it was read; not retried.
    An ``openai.OpenAIError``, so the SDK passes it on as it is."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"reply too large: over {size_text(limit)} (max_reply_bytes)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.limit,))


class CallTimeoutError(openai.APITimeoutError):
    """A model call past its deadline or a stalled stream; retried like any SDK timeout."""

    def __init__(self, message: str, *, request: httpx2.Request) -> None:
        # The SDK's APITimeoutError always says "Request timed out."; this names the limit.
        openai.APIConnectionError.__init__(self, message=message, request=request)
