"""Plain async chat completions sent directly on aiohttp, without the SDK's client: only
the HTTP exchange, raising the SDK's own exceptions as the SDK would.
"""

# Hand-written for speed: client CPU per call (1,000 ainvoke, 32 at once, the scripted server
# in another process) is 1.6-1.7 ms through the SDK, 0.5 ms here (benchmarks/run.py P1, P4).

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import openai

from pacore_graph.backends.replies import undecodable
from pacore_graph.errors import ReplyTooLargeError


@dataclass(frozen=True)
class DirectRequest:
    """What a direct call sends besides its body, and the size limit of its reply."""

    url: str
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout
    max_bytes: int | None = None


_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


async def post_chat_completion(
    session: aiohttp.ClientSession, request: DirectRequest, body: dict[str, Any]
) -> dict[str, Any]:
    """One non-streamed chat completion; its JSON, or the SDK's exception."""
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
        raise _status_error(request.url, response.status, response.headers, raw)
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


def _status_error(url: str, status: int, headers: Any, raw: bytes) -> openai.APIStatusError:
    """The SDK's exception for an HTTP error, built as the SDK builds it."""
    skip = {"content-encoding", "content-length", "transfer-encoding"}
    response = httpx2.Response(
        status,
        headers=[(k, v) for k, v in headers.items() if k.lower() not in skip],
        content=raw,
        request=httpx2.Request("POST", url),
    )
    message = f"Error code: {status}"
    try:
        data: Any = json.loads(raw)
    except ValueError:
        data = raw.decode(errors="replace").strip()
    body = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        message += f" - {body['message']}"  # the SDK names only the message field
    other = openai.InternalServerError if status >= 500 else openai.APIStatusError
    return _STATUS_ERRORS.get(status, other)(message, response=response, body=body)


def _transport_error(exc: BaseException, url: str) -> openai.APIConnectionError:
    """The SDK's error for a transport failure, caused by the httpx2 exception it would see."""
    request = httpx2.Request("POST", url)
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        error: openai.APIConnectionError = openai.APITimeoutError(request=request)
        kind = (
            httpx2.ConnectTimeout
            if isinstance(exc, aiohttp.ConnectionTimeoutError)
            else httpx2.ReadTimeout
        )
        cause: Exception = kind(str(exc) or "timed out", request=request)
    else:
        error = openai.APIConnectionError(request=request)
        failure: type[httpx2.TransportError] = (
            httpx2.ConnectError
            if isinstance(exc, aiohttp.ClientConnectorError)
            else httpx2.RemoteProtocolError
            if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError)
            else httpx2.ReadError
        )
        cause = failure(str(exc) or type(exc).__name__, request=request)
    cause.__cause__ = exc
    error.__cause__, error.__suppress_context__ = cause, True  # as `raise error from cause`
    return error
