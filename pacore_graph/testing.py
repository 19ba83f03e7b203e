"""A scripted OpenAI-compatible server on loopback, for tests, examples, benchmarks and demos
without a GPU: every request is logged and answered by a function you write (`Responder`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import socket
import struct
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web


@dataclass
class Reply:
    """One scripted answer; token counts default to word counts."""

    content: str = ""
    reasoning_content: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay: float = 0.0
    """Seconds before answering; a client that hangs up meanwhile counts in ``cancelled``."""
    status: int = 200  # anything but 200 sends an OpenAI-style error body
    error: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "1"}
    fault: Literal["reset", "cut", "malformed"] | None = None
    """"reset": FIN then RST, no answer; "cut": half the body or stream, then reset;
    "malformed": a 200 whose body is not JSON."""
    tool_calls: list[dict[str, Any]] | None = None
    """OpenAI ``tool_calls`` of the answer, in one delta when streamed."""
    transform: Callable[[dict[str, Any]], Any] | None = None
    """Rewrites the completion (or each chunk) into any JSON value, or bytes sent as they are."""
    trickle: float = 0.0
    """Seconds between bytes: the answer goes out a byte at a time, never stalling long."""
    endless: Literal["comment", "empty_delta"] | None = None
    """A stream that never ends: after the content, an SSE comment (``: ping``) or an empty
    delta every ``trickle`` seconds (0.05 when 0) until the client hangs up."""
    pieces: int = 0
    """Streamed: the content in this many equal pieces over ``delay``, not word by word after."""
    on_sent: Callable[[], object] | None = None  # called once the whole answer is sent


Responder = Callable[[dict[str, Any]], "Reply | str | Awaitable[Reply | str]"]
"""Request body in, reply out (a plain string is the content). A function runs in a thread
of its own, so it may block to hold a call; a coroutine function runs on the server's loop."""


def word_count(text: object) -> int:
    """The scripted server's token count: words (none in anything but text)."""
    return len(text.split()) if isinstance(text, str) else 0


def last_user_text(body: dict[str, Any]) -> str:
    """Content of the last user message of a request body."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _default_responder(body: dict[str, Any]) -> Reply:
    return Reply(content=f"<think>thinking</think>I read {word_count(last_user_text(body))} words.")


class ScriptedServer:
    """An aiohttp server speaking ``/v1/chat/completions`` (plain and SSE), ``/v1/models``
    and ``/health``, in a thread of its own (`start`) or on the running loop (`serve`);
    ``responder`` answers each chat request, ``port`` 0 picks a free port."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        model: str = "scripted",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder = responder or _default_responder
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []  # of each chat request
        self.connections: set[tuple[str, int]] = set()  # fewer than requests: reused
        self.times: list[float] = []  # time.monotonic() at each chat request's arrival
        self.cancelled = 0  # requests whose client hung up before all of the answer was sent
        self.in_flight = 0
        self.max_in_flight = 0
        self.app = web.Application(client_max_size=2**26)  # may get routes before `start`
        # A deep backlog: a thousand clients connecting at once must not wait for SYN retries.
        self._socket = socket.create_server((host, port), backlog=4096)
        self._stopping = False
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedServer:
        """Starts serving in a background thread, on an event loop of its own."""
        ready = threading.Event()
        coroutine = self.serve(ready.set)
        self._thread = threading.Thread(target=asyncio.run, args=(coroutine,), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError(f"the scripted server did not start on port {self.port}")
        return self

    async def serve(self, ready: Callable[[], object] = lambda: None) -> None:
        """Serves on the running event loop until `stop`; calls ``ready`` once it listens."""
        self._loop = asyncio.get_running_loop()
        self.app.router.add_route("*", "/{path:.*}", self._route)
        # A client that hangs up cancels its handler (counted in `cancelled`). To aiohttp a
        # shutdown_timeout of 0 is none: stop would wait for every pending answer.
        runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1
        )
        await runner.setup()
        await web.SockSite(runner, self._socket, backlog=4096).start()
        ready()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Stops serving and closes its socket and connections; pending answers are dropped."""
        self._stopping = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        self._socket.close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path, get = request.path.rstrip("/"), request.method == "GET"
        if request.method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(request)
        if get and path == "/health":  # vLLM's liveness probe, for routers
            return web.Response()
        if get and path.endswith("/models"):
            model = {"id": self.model, "object": "model", "owned_by": "scripted"}
            return await _send(request, 200, {"object": "list", "data": [model]})
        return await _send(request, 404, {"error": {"message": f"no route {request.path_qs}"}})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read() or b"{}")
        self.requests.append(body)
        self.times.append(time.monotonic())
        self.authorizations.append(request.headers.get("Authorization"))
        if request.transport is not None:
            self.connections.add(request.transport.get_extra_info("peername"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if inspect.iscoroutinefunction(self.responder):
                reply = await self.responder(body)
            else:
                reply = await _in_thread(self.responder, body)
            reply = Reply(content=reply) if isinstance(reply, str) else reply
            response = await self._answer(request, body, reply)
            if reply.on_sent is not None and not reply.fault:
                reply.on_sent()
            return response
        except (asyncio.CancelledError, ConnectionError):  # the client hung up
            if not self._stopping:
                self.cancelled += 1
            raise
        except Exception:  # a responder that fails: the connection drops unanswered
            traceback.print_exc()
            return await _reset(request)
        finally:
            self.in_flight -= 1

    async def _answer(
        self, request: web.Request, body: dict[str, Any], reply: Reply
    ) -> web.StreamResponse:
        stream = bool(body.get("stream"))
        if reply.delay and not (reply.pieces and stream):
            await asyncio.sleep(reply.delay)
        if reply.fault == "reset":
            return await _reset(request)
        if reply.status != 200:
            error = {"message": reply.error, "type": "scripted", "code": reply.status}
            return await _send(request, reply.status, {"error": error}, reply)
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = sum(word_count(m.get("content")) for m in body.get("messages", []))
        generated = reply.completion_tokens
        if generated is None:
            generated = word_count(reply.content) + word_count(reply.reasoning_content)
        usage = {"prompt_tokens": prompt, "completion_tokens": generated}
        usage["total_tokens"] = prompt + generated
        kind = "chat.completion.chunk" if stream else "chat.completion"
        base: dict[str, Any] = {"id": f"chatcmpl-{len(self.requests)}", "object": kind}
        base |= {"created": int(time.time()), "model": self.model}
        if stream:
            return await self._stream(request, body, reply, usage, base)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning_content is not None:
            message["reasoning_content"] = reply.reasoning_content
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason}
        completion: Any = {**base, "choices": [choice], "usage": usage}
        if reply.transform is not None:
            completion = reply.transform(completion)
        return await _send(request, 200, completion, reply)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: Reply,
        usage: dict[str, int],
        base: dict[str, Any],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any] | None, **extra: Any) -> None:
            choices = [] if delta is None else [{"index": 0, "delta": delta}]
            chunk: Any = {**base, "choices": choices, **extra}
            if reply.transform is not None:
                chunk = reply.transform(chunk)
            event = chunk if isinstance(chunk, bytes) else json.dumps(chunk).encode()
            await _write(response, b"data: " + event + b"\n\n", reply.trickle)

        for word in (reply.reasoning_content or "").split(" "):
            if word:
                await send({"reasoning_content": word + " "})
        if reply.pieces:
            step = -(-len(reply.content) // reply.pieces)
            texts = [reply.content[i * step : (i + 1) * step] for i in range(reply.pieces)]
        else:
            words = reply.content.split(" ")
            if reply.fault == "cut":
                words = words[: max(1, len(words) // 2)]
            texts = [word + " " for word in words[:-1]] + words[-1:]
        began = time.monotonic()
        for i, text in enumerate(texts):
            due = began + reply.delay * (i + 1) / len(texts)
            if reply.pieces and (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if text:
                await send({"content": text})
        if reply.fault == "cut":  # a clean end without a finish_reason, then the reset
            await response.write_eof()
            return await _reset(request)
        if reply.tool_calls:
            await send({"tool_calls": [{"index": i, **c} for i, c in enumerate(reply.tool_calls)]})
        while reply.endless:  # until the client hangs up (or the server stops)
            await asyncio.sleep(reply.trickle or 0.05)
            if reply.endless == "comment":
                await response.write(b": ping\n\n")
            else:
                await send({})
        choice = {"index": 0, "delta": {}, "finish_reason": reply.finish_reason}
        await send(None, choices=[choice])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(None, usage=usage)
        await _write(response, b"data: [DONE]\n\n", reply.trickle)
        return response


async def _in_thread(responder: Callable[[dict[str, Any]], Any], body: dict[str, Any]) -> Any:
    """Runs a plain responder in a daemon thread: one still held when the tests end does not
    keep the process alive, as a thread pool's would."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():  # not if the client hung up already
            try:
                future.set_result(responder(body))
            except Exception as exc:
                future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return await asyncio.wrap_future(future)


async def _send(
    request: web.Request, status: int, payload: Any, reply: Reply | None = None
) -> web.StreamResponse:
    """Sends a JSON body (``bytes`` as they are) with ``reply``'s headers, all of it, or as
    its fault says: "malformed" half the body, "cut" half its Content-Length, then reset."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", **(reply.headers if reply else {})}
    if reply is None or not (reply.fault or reply.trickle):
        return web.Response(status=status, body=data, headers=headers)
    if reply.fault == "malformed":
        data = data[: len(data) // 2]
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(data) * (2 if reply.fault == "cut" else 1)
    await response.prepare(request)
    await _write(response, data, reply.trickle)
    return await _reset(request) if reply.fault == "cut" else response


async def _write(response: web.StreamResponse, data: bytes, trickle: float) -> None:
    """Writes ``data``, a byte at a time ``trickle`` seconds apart when set."""
    if not trickle:
        return await response.write(data)
    for i in range(len(data)):
        if i:
            await asyncio.sleep(trickle)
        await response.write(data[i : i + 1])


async def _reset(request: web.Request) -> web.Response:
    """Ends the connection once what was written has left, with a FIN then a RST (linger 0):
    a server that crashes mid-answer."""
    if (transport := request.transport) is not None:
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        transport.write_eof()
        linger = struct.pack("ii", 1, 0)
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        transport.abort()
    return web.Response()
