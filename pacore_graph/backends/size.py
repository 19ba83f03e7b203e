"""A limit on the size of one reply, kept while it is read: past it, `ReplyTooLargeError`
and the rest never read. A body counts its bytes; a stream the UTF-8 bytes of its content
and thinking, and those of the event being read."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx2
from langchain_core.messages import BaseMessage

from pacore_graph.errors import ReplyTooLargeError

MAX_REPLY_BYTES = 8 * 1024 * 1024
"""The default limit: several times the longest reply PaCoRe asks for (131k tokens)."""


@dataclass(slots=True)
class ByteCount:
    """Counts a body's bytes, or (``lines``) those of an event stream's unfinished line."""

    limit: int
    lines: bool
    size: int = 0

    @classmethod
    def of(cls, headers: httpx2.Headers, limit: int) -> ByteCount:
        """The count for a reply with ``headers``; `ReplyTooLargeError` at once when it
        announces (``Content-Length``) more than ``limit`` bytes. An SSE stream counts lines."""
        if headers.get("content-type", "").startswith("text/event-stream"):
            return cls(limit, lines=True)
        with contextlib.suppress(ValueError):
            if int(headers.get("content-length", "")) > limit:
                raise ReplyTooLargeError(limit)
        return cls(limit, lines=False)

    def add(self, chunk: bytes) -> None:
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) if self.lines else -1
        self.size = len(chunk) - end - 1 if end >= 0 else self.size + len(chunk)
        if self.size > self.limit:
            raise ReplyTooLargeError(self.limit)


@dataclass
class AsyncSizedStream(httpx2.AsyncByteStream):
    """An async body raising `ReplyTooLargeError` past its ``counter``'s limit."""

    inner: httpx2.AsyncByteStream
    counter: ByteCount

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            try:
                self.counter.add(chunk)
            except ReplyTooLargeError:
                await self.inner.aclose()
                raise
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(slots=True)
class StreamSize:
    """Counts a stream's content and thinking (UTF-8 bytes) as its chunks arrive."""

    limit: int | None
    size: int = 0

    def add(self, message: BaseMessage) -> None:
        """Adds a chunk's text; raises `ReplyTooLargeError` once the total is past the limit."""
        if self.limit is None:
            return
        for text in (message.content, message.additional_kwargs.get("reasoning_content")):
            if isinstance(text, str) and text:
                self.size += len(text.encode("utf-8", "surrogatepass"))
        if self.size > self.limit:
            raise ReplyTooLargeError(self.limit)
