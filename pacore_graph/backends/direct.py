"""Plain async chat completions sent directly on aiohttp, without the SDK's client: only
the HTTP exchange, raising the SDK's own exceptions as the SDK would."""

# Hand-written for speed: client CPU per call (1,000 ainvoke, 32 at once, the scripted server
# in another process) is 1.6-1.7 ms through the SDK, 0.5 ms here (benchmarks/run.py P1, P4).

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import openai

from pacore_graph._compat import sdk_status_error
from pacore_graph.backends.replies import undecodable
from pacore_graph.errors import ReplyTooLargeError


@dataclass(frozen=True)
class DirectRequest:
    """What a direct call sends besides its body, and the size limit of its reply."""

    url: str
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout
    max_bytes: int | None = None


async def post_chat_completion(
    session: aiohttp.ClientSession,
    request: DirectRequest,
    body: dict[str, Any],
    sdk: Callable[[], openai.AsyncOpenAI],
) -> dict[str, Any]:
    """A non-streamed chat completion's JSON, or the SDK's exception (``sdk()`` makes HTTP ones)."""
    try:
        async with session.post(
            request.url,
            data=json.dumps(body).encode(),
            headers=request.headers,
            timeout=request.timeout,
        ) as response:
            raw = await _read(response, request.max_bytes)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _transport_error(exc, request.url)  # noqa: B904 (names its cause; a local: a cycle)
    if response.status >= 400:
        skip = {"content-encoding", "content-length", "transfer-encoding"}  # aiohttp decoded it
        failed = httpx2.Response(
            response.status,
            headers=[(k, v) for k, v in response.headers.items() if k.lower() not in skip],
            content=raw,
            request=httpx2.Request("POST", request.url),
        )
        raise sdk_status_error(sdk(), failed)
    try:  # bytes that are no UTF-8 become U+FFFD, as lone surrogates will (checked_completion)
        return json.loads(raw.decode("utf-8", "replace"))
    except ValueError as exc:
        raise undecodable(exc) from exc


async def _read(response: aiohttp.ClientResponse, limit: int | None) -> bytes:
    """The body of ``response``; past ``limit`` bytes, closed with `ReplyTooLargeError`."""
    if limit is None:
        return await response.read()
    if response.content_length is not None and response.content_length > limit:
        response.close()
        raise ReplyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()
            raise ReplyTooLargeError(limit)
        chunks.append(chunk)
    return b"".join(chunks)


_CAUSES = (
    (aiohttp.ConnectionTimeoutError, httpx2.ConnectTimeout),
    (TimeoutError, httpx2.ReadTimeout),  # aiohttp's ServerTimeoutError included
    (aiohttp.ClientConnectorError, httpx2.ConnectError),
    ((aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError), httpx2.RemoteProtocolError),
    (BaseException, httpx2.ReadError),
)
"""The httpx2 exception the SDK would see for an aiohttp one: the first that matches."""


def _transport_error(exc: BaseException, url: str) -> openai.APIConnectionError:
    """The SDK's error for a transport failure, caused by the httpx2 exception it would see."""
    request = httpx2.Request("POST", url)
    kind = next(kind for caught, kind in _CAUSES if isinstance(exc, caught))
    timeout = issubclass(kind, httpx2.TimeoutException)
    cause = kind(str(exc) or ("timed out" if timeout else type(exc).__name__), request=request)
    cause.__cause__ = exc
    error = (openai.APITimeoutError if timeout else openai.APIConnectionError)(request=request)
    error.__cause__, error.__suppress_context__ = cause, True  # as `raise error from cause`
    return error
