"""Model calls that end: a deadline for the whole call (a read timeout never trips on a
server that trickles a byte a second), and a stall limit for streams. Async calls run
under one timer (`until_deadline` for a stream), sync calls on `DeadlineTransport`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx2

from pacore_graph.backends.size import ByteCount
from pacore_graph.errors import CallTimeoutError, ReplyTooLargeError

_E = TypeVar("_E", bound=BaseException)
_T = TypeVar("_T")

DEADLINE_S = 7200.0
"""The default deadline of one call: a 131k-token reasoning call queued behind a batch."""

STALL_S = 600.0
"""The default stall limit of a stream: vLLM's first chunk comes after queueing and prefill."""

CONNECT_S = 5.0
"""Seconds to connect, the SDK's default (capped by the deadline)."""


def deadline_message(seconds: float) -> str:
    return f"call exceeded its {seconds:g} s deadline"


def stall_message(seconds: float) -> str:
    return f"the stream stalled: nothing for {seconds:g} s"


class DeadlineExceeded(httpx2.ReadTimeout):
    """A sync call's deadline passed between two reads (the SDK's ``APITimeoutError``)."""


@dataclass
class _CheckedStream(httpx2.SyncByteStream):
    """A body raising `DeadlineExceeded` past ``deadline`` (a clock time, the seconds it
    names) and `ReplyTooLargeError` past ``size``."""

    inner: httpx2.SyncByteStream
    request: httpx2.Request
    deadline: tuple[float, float] | None
    size: ByteCount | None

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            if self.deadline is not None and time.monotonic() > self.deadline[0]:
                raise DeadlineExceeded(deadline_message(self.deadline[1]), request=self.request)
            if self.size is not None:
                try:
                    self.size.add(chunk)
                except ReplyTooLargeError:
                    self.inner.close()
                    raise
            yield chunk

    def close(self) -> None:
        self.inner.close()


@dataclass
class DeadlineTransport(httpx2.BaseTransport):
    """A sync transport whose requests end ``seconds`` after they were sent (overrun by at
    most one read), and whose replies end past ``max_bytes`` (None: no limit)."""

    inner: httpx2.BaseTransport
    seconds: float | None
    max_bytes: int | None = None

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        seconds = self.seconds
        deadline = None if seconds is None else (time.monotonic() + seconds, seconds)
        response = self.inner.handle_request(request)
        stream = response.stream
        if not isinstance(stream, httpx2.SyncByteStream):  # pragma: no cover - sync only
            return response
        size = None
        if self.max_bytes is not None:
            try:
                size = ByteCount.of(response.headers, self.max_bytes)
            except ReplyTooLargeError:
                stream.close()  # unread: the connection is closed, not reused
                raise
        if deadline is not None or size is not None:
            response.stream = _CheckedStream(stream, request, deadline, size)
        return response

    def close(self) -> None:
        self.inner.close()


def cause_of(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first ``kind`` in the causes of ``exc`` (the SDK and langchain-openai wrap them)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, kind):
        cause = cause.__cause__
    return cause


async def until_deadline(
    chunks: AsyncGenerator[_T, None],
    seconds: float,
    error: Callable[[], CallTimeoutError],
) -> AsyncGenerator[_T, None]:
    """``chunks`` until ``seconds`` from now; then ``error()`` is raised, cancelling a
    pending wait for a chunk (``asyncio.timeout`` cannot span a generator's yields)."""
    # One timer per stream: an asyncio.timeout per chunk costs 17 µs a chunk, this 3 µs.
    waiter: asyncio.Task[object] | None = None  # the task awaiting the next chunk, if one is
    expired = cancelled = False

    def expire() -> None:
        nonlocal expired, cancelled
        expired = True
        if waiter is not None:
            cancelled = True
            waiter.cancel()

    timer = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        while True:
            if expired:
                raise error()
            task = asyncio.current_task()
            assert task is not None
            cancelling = task.cancelling()
            waiter = task
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                # Ours, unless someone else cancelled the task too (then theirs wins).
                if cancelled and task.uncancel() <= cancelling:
                    raise error() from None
                raise
            finally:
                waiter = None
            yield chunk
    finally:
        timer.cancel()
        await chunks.aclose()
