"""Model calls that end: a deadline for the whole call, and a stall limit for streams.

An HTTP read timeout limits each read, so a server that trickles a byte a second, or a
stream that sends keep-alives forever, never trips it. `ChatOpenAICompatible` gives each
call a deadline from its first byte sent to its last byte received instead: async calls
under one timer (`asyncio.timeout`, or `until_deadline` for a stream); sync calls on a
transport (`DeadlineTransport`) that checks the deadline between reads, each read being
bounded by the per-read timeout (the stall limit on a stream).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TypeVar

import httpx2

from pacore_graph.backends.size import ByteCount, event_stream, over_length, too_large
from pacore_graph.errors import CallTimeoutError, ReplyTooLargeError

DEADLINE_S = 7200.0
"""The default deadline of one call (one attempt; the graph retries): two hours. A
131k-token reasoning call decodes in 44-73 min at 30-50 tokens/s; two hours leave room
for queueing behind a full batch and a slower decode under load (it still finishes at
18 tokens/s), while a call that hangs is retried the same morning, not never."""

STALL_S = 600.0
"""The default stall limit of a streamed answer: ten minutes without a chunk. vLLM sends
a stream's first chunk only after queueing and prefill (minutes for a long synthesis
prompt behind a full batch). A non-streamed answer has no stall limit: the server sends
nothing until it has generated all of it."""

CONNECT_S = 5.0
"""Seconds to connect, as the SDK's default (capped by the deadline)."""


def deadline_message(seconds: float) -> str:
    """The cause line of a call past its deadline."""
    return f"call exceeded its {seconds:g} s deadline"


def stall_message(seconds: float) -> str:
    """The cause line of a stream that stalled."""
    return f"the stream stalled: nothing for {seconds:g} s"


# -- sync: a transport that checks the deadline between reads ------------------------------


class DeadlineExceeded(httpx2.ReadTimeout):
    """A sync call's deadline passed between two reads; an httpx2 timeout, so the SDK
    reports it as any other (``APITimeoutError``, caused by this)."""


class _CheckedStream(httpx2.SyncByteStream):
    """A response body that raises `DeadlineExceeded` when a read returns past ``deadline``
    (a clock time, and the seconds it names; one clock read per chunk read from the
    socket), and `ReplyTooLargeError` once ``size`` passes its limit."""

    def __init__(
        self,
        inner: httpx2.SyncByteStream,
        request: httpx2.Request,
        deadline: tuple[float, float] | None,
        size: ByteCount | None,
    ) -> None:
        self._inner, self._request, self._deadline, self._size = inner, request, deadline, size

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            if self._deadline is not None and time.monotonic() > self._deadline[0]:
                message = deadline_message(self._deadline[1])
                raise DeadlineExceeded(message, request=self._request)
            if self._size is not None:
                try:
                    self._size.add(chunk)
                except ReplyTooLargeError:
                    self._inner.close()
                    raise
            yield chunk

    def close(self) -> None:
        self._inner.close()


class DeadlineTransport(httpx2.BaseTransport):
    """Wraps a sync transport so each request ends by ``seconds`` after it was sent, and a
    reply that is no stream ends past ``max_bytes`` (`ReplyTooLargeError`, from the
    announced ``Content-Length`` or while the body is read; None: no limit).

    Connecting, sending and waiting for the headers are bounded by the request's own
    timeouts (which `ChatOpenAICompatible` keeps within the deadline); the body is read
    through `_CheckedStream`. A read that blocks is bounded by the per-read timeout, so a
    call overruns its deadline by at most one read.
    """

    def __init__(
        self, inner: httpx2.BaseTransport, seconds: float | None, max_bytes: int | None = None
    ) -> None:
        self._inner = inner
        self._seconds = seconds
        self._max_bytes = max_bytes

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        seconds = self._seconds
        deadline = None if seconds is None else (time.monotonic() + seconds, seconds)
        response = self._inner.handle_request(request)
        stream = response.stream
        if not isinstance(stream, httpx2.SyncByteStream):  # pragma: no cover - sync only
            return response
        limit, size = self._max_bytes, None
        if limit is not None:
            events = event_stream(response.headers)
            if not events and over_length(response.headers, limit):
                stream.close()  # unread: the connection is closed, not reused
                raise too_large(limit)
            size = ByteCount(limit, events)
        if deadline is not None or size is not None:
            stream = _CheckedStream(stream, request, deadline, size)
        return httpx2.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=stream,
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


def deadline_cause(exc: BaseException) -> DeadlineExceeded | None:
    """The `DeadlineExceeded` behind ``exc`` (the SDK and langchain-openai wrap it)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, DeadlineExceeded):
            return cause
        cause = cause.__cause__
    return None


def keepalive_options() -> list[tuple[int, int, int]]:
    """TCP keep-alive on sync connections, as langchain-openai sets by default: a peer that
    vanished without a reset is found in about two minutes rather than at the deadline."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", 60),
        ("TCP_KEEPINTVL", 10),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 120_000),
    ):
        if hasattr(socket, name):  # Linux has them all; other systems some
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One SSL context for every sync client: loading the CA bundle costs ~50 ms a time."""
    return httpx2.create_ssl_context()


# -- async: one timer for a stream ---------------------------------------------------------

_T = TypeVar("_T")


async def until_deadline(
    chunks: AsyncGenerator[_T, None],
    seconds: float,
    error: Callable[[], CallTimeoutError],
) -> AsyncGenerator[_T, None]:
    """``chunks`` until ``seconds`` from now; then ``error()`` is raised.

    One timer for the whole stream, not one per chunk (``asyncio.timeout`` cannot span
    the yields of a generator, and one per chunk costs ~15 µs): when it fires while the
    consumer waits for the next chunk, that wait is cancelled, as ``asyncio.timeout``
    does it; when it fires while the consumer works on a chunk, the next chunk raises.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Task[object] | None = None  # the task awaiting the next chunk, if one is
    expired = cancelled = False

    def expire() -> None:
        nonlocal expired, cancelled
        expired = True
        if waiter is not None:
            cancelled = True
            waiter.cancel()

    timer = loop.call_later(seconds, expire)
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
