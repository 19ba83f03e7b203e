"""Plain async chat completions sent directly on aiohttp, without the SDK's client.

The request and its result are ``BaseChatOpenAI``'s (`_get_request_payload`,
`_create_chat_result`); only the HTTP exchange is written here, raising the SDK's own
exceptions: an HTTP error is the SDK's status error for its code (``RateLimitError``,
``BadRequestError``, ...) carrying the response; a transport failure is
``openai.APIConnectionError`` / ``APITimeoutError``, caused by the httpx2 exception the SDK
would see. Streams, sync calls, structured output and the Responses API go through the SDK.
"""

# Why it is hand-written (benchmarks/run.py --only P1,P4, 2 shared cores; client CPU per
# trajectory over 592 trajectories; "SDK" = direct_http=False):
#
#                 P1 wall s (wall/ideal)   P1 CPU ms   P4 CPU ms, no saver / memory
#   SDK           24.74 (1.045)            4.60        3.10-3.40 / 3.25-4.25
#   this path     24.40 (1.031)            3.86        1.92 / 2.44   (median of 5)
#
# Per call (2,000 ainvoke, 64 at once, zero latency): SDK 2.7-3.0 ms, this path 0.6-0.8 ms;
# with langchain-openai 1.8.1 and openai 3.63 (1,000 ainvoke, 32 at once, the scripted
# server in another process, client CPU): SDK 1.6-1.7 ms, this path 0.5 ms.
# The SDK's request building (a TypedDict walk of the body, URL parsing, header merging),
# httpx2 on top of aiohttp, typed response objects, and BaseChatOpenAI building the result
# in a worker thread make the difference.

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import openai

from pacore_graph.backends.replies import undecodable
from pacore_graph.backends.size import too_large


@dataclass(frozen=True)
class DirectRequest:
    """What a direct call sends besides its body: the SDK's headers and timeouts."""

    url: str
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout
    max_bytes: int | None = None
    """The size limit of a reply (`ChatOpenAICompatible.max_reply_bytes`); None: none."""


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
        error = _transport_error(exc, request.url)
        raise error from error.__cause__
    if response.status >= 400:
        raise _status_error(request.url, response.status, response.headers, raw)
    try:  # bytes that are no UTF-8 become U+FFFD, as lone surrogates will (checked_completion)
        return json.loads(raw.decode("utf-8", "replace"))
    except ValueError as exc:
        raise undecodable(exc) from exc


async def _read(response: aiohttp.ClientResponse, limit: int | None) -> bytes:
    """The body of ``response``; past ``limit`` bytes (announced, or read so far) the
    connection is closed and `ReplyTooLargeError` raised, the rest never read."""
    if limit is None:
        return await response.read()
    if response.content_length is not None and response.content_length > limit:
        response.close()
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            response.close()
            raise too_large(limit)
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
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        cls = openai.InternalServerError if status >= 500 else openai.APIStatusError
    return cls(message, response=response, body=body)


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
    error.__cause__ = cause
    return error
