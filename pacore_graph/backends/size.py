"""A limit on the size of one reply, kept while it is read.

A reply is held several times over (the body, its JSON, LangChain's objects, the
checkpoint); a reply past ``max_reply_bytes`` raises `ReplyTooLargeError` as soon as the
limit is passed, before the rest is read or anything is parsed, and its connection is
closed. A non-streamed reply counts the bytes of its body (after decompression); a stream
counts the UTF-8 bytes of its content and thinking as chunks arrive (an SSE stream's
framing is ~100 bytes a token, so its raw bytes would say little about the reply), and
the bytes of the event it is reading, so one endless event stops at the limit too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2

from pacore_graph.errors import ReplyTooLargeError

MAX_REPLY_BYTES = 8 * 1024 * 1024
"""The default limit: 8 MiB. A 131k-token reply (the longest PaCoRe asks for) is ~0.5-1 MB
of text; JSON escaping and the separated thinking roughly double that, so 8 MiB leaves 4x
room, while a runaway or garbled reply stops long before it costs gigabytes."""


def too_large(limit: int) -> ReplyTooLargeError:
    """The error of a reply past ``limit`` bytes."""
    return ReplyTooLargeError(limit)


def over_length(headers: httpx2.Headers, limit: int) -> bool:
    """True when the reply announces (``Content-Length``) more than ``limit`` bytes."""
    try:
        return int(headers.get("content-length", "")) > limit
    except ValueError:
        return False


def event_stream(headers: httpx2.Headers) -> bool:
    """True for a streamed reply (SSE), whose content is counted chunk by chunk instead."""
    return headers.get("content-type", "").startswith("text/event-stream")


class ByteCount:
    """Counts a body's bytes, or those of an event stream's unfinished line: a stream's
    content is counted by `StreamSize` once an event is parsed, and a line longer than the
    limit holds a reply longer than it (JSON takes at least a byte a byte)."""

    __slots__ = ("limit", "lines", "size")

    def __init__(self, limit: int, lines: bool) -> None:
        self.limit, self.lines, self.size = limit, lines, 0

    def add(self, chunk: bytes) -> None:
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) if self.lines else -1
        self.size = len(chunk) - end - 1 if end >= 0 else self.size + len(chunk)
        if self.size > self.limit:
            raise too_large(self.limit)


class AsyncSizedStream(httpx2.AsyncByteStream):
    """An async response body that raises `ReplyTooLargeError` past ``limit`` bytes (with
    ``lines``: past ``limit`` bytes without a line break)."""

    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, lines: bool = False) -> None:
        self._inner = inner
        self._counter = ByteCount(limit, lines)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            try:
                self._counter.add(chunk)
            except ReplyTooLargeError:
                await self._inner.aclose()
                raise
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class StreamSize:
    """Counts a stream's content and thinking (UTF-8 bytes) as its chunks arrive."""

    __slots__ = ("limit", "size")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.size = 0

    def add(self, content: object, thinking: object) -> None:
        """Adds a chunk's text; raises `ReplyTooLargeError` once the total is past the limit."""
        if self.limit is None:
            return
        for text in (content, thinking):
            if isinstance(text, str) and text:
                self.size += len(text.encode("utf-8", "surrogatepass"))
        if self.size > self.limit:
            raise too_large(self.limit)
