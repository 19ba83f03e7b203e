"""A scripted OpenAI-compatible server and a private redis-server on loopback, for tests,
examples, benchmarks and demos without a GPU.

Every request is logged and answered by a function you write, so a test knows
exactly what each trajectory said and can assert on what each call was sent.

Example:
    ```python
    with ScriptedServer(lambda req: Reply(content="<think>hm</think>\\\\boxed{4}")) as server:
        model = ChatOpenAICompatible(base_url=server.base_url, model=server.model)
    ```
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import redis

__all__ = [
    "RedisNotInstalledError",
    "RedisServer",
    "Reply",
    "Responder",
    "ScriptedServer",
    "free_port",
    "last_user_text",
    "word_count",
]


@dataclass
class Reply:
    """One scripted answer; token counts default to word counts."""

    content: str = ""
    reasoning_content: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay: float = 0.0
    """Seconds to wait before answering (a slow, held or hanging call); a client that hangs
    up meanwhile is counted in ``ScriptedServer.cancelled`` and gets no answer."""
    status: int = 200
    """HTTP status; anything but 200 sends an OpenAI-style error body."""
    error: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"Retry-After": "1"}``."""
    fault: Literal["reset", "cut", "malformed"] | None = None
    """"reset": drop the connection (TCP RST) without answering; "cut": send half the
    answer (or half the stream), then reset; "malformed": a 200 whose body is not JSON."""
    tool_calls: list[dict[str, Any]] | None = None
    """OpenAI ``tool_calls`` of the answer (``id``, ``type``, ``function``: ``name``,
    ``arguments``); sent whole, in one delta when streamed."""
    transform: Callable[[dict[str, Any]], Any] | None = None
    """Rewrites the completion (or, streamed, each chunk) before it is sent: any JSON value
    (a list, a dict without ``choices``, ``"message": None``, ...), or ``bytes`` sent as
    is, for a server that answers 200 with something malformed."""
    trickle: float = 0.0
    """Seconds between bytes: the answer (its body, or every stream event) goes out one
    byte at a time, for a server that never stalls long enough for a read timeout."""
    endless: Literal["comment", "empty_delta"] | None = None
    """A stream that never ends: after the content it sends, instead of a
    ``finish_reason``, a keep-alive SSE comment (``: ping``) or a chunk with an empty delta
    every ``trickle`` seconds (0.05 when 0) until the client hangs up."""


Responder = Callable[[dict[str, Any]], "Reply | str"]
"""Request body in, reply out (a plain string is the content)."""


def word_count(text: str | None) -> int:
    """The scripted server's token count: whitespace-separated words."""
    return len(text.split()) if text else 0


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
    """A threaded HTTP server speaking ``/v1/chat/completions`` (plain and SSE), ``/v1/models``
    and ``/health``.

    Args:
        responder: Answers each chat request.
        model: The model id the server reports.
        host: Loopback address to bind.
        port: 0 picks a free port.
    """

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
        self.authorizations: list[str | None] = []
        """The Authorization header of each chat request."""
        self.connections: set[tuple[str, int]] = set()
        """Client addresses seen: fewer than requests means connections were reused."""
        self.times: list[float] = []
        """``time.monotonic()`` at each chat request's arrival."""
        self.cancelled = 0
        """Requests whose client hung up before the server had sent all of its answer (a
        delayed or trickled answer, or a stream without end)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedServer:
        """Starts serving in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the socket; delayed answers are abandoned."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log(self, body: dict[str, Any], address: Any, authorization: str | None) -> None:
        with self._lock:
            self.requests.append(body)
            self.times.append(time.monotonic())
            self.authorizations.append(authorization)
            self.connections.add(tuple(address))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without TCP_NODELAY each answer
            # waits ~40 ms for a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _json(
                self,
                status: int,
                payload: Any,
                headers: dict[str, str] | None = None,
                fault: str | None = None,
                trickle: float = 0.0,
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                if fault == "malformed":
                    data = data[: len(data) // 2]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) * (2 if fault == "cut" else 1)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self._send(data, trickle) and fault == "cut":
                    self._reset()

            def _send(self, data: bytes, trickle: float) -> bool:
                """Writes ``data`` (a byte at a time ``trickle`` seconds apart when set);
                False when the client hung up meanwhile (counted in ``cancelled``)."""
                try:
                    if not trickle:
                        self.wfile.write(data)
                        self.wfile.flush()
                        return True
                    for i in range(len(data)):
                        if i and not self._wait(trickle):
                            return False
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                    return True
                except OSError:  # a broken pipe or a reset: the client is gone
                    with server._lock:
                        server.cancelled += 1
                    self.close_connection = True
                    return False

            def _reset(self) -> None:
                self.wfile.flush()
                # Linger 0: closing sends a TCP RST, as a crashed server or proxy does.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True

            def _wait(self, seconds: float) -> bool:
                """Sleeps ``seconds`` unless the client hangs up first (then False)."""
                end = time.monotonic() + seconds
                while (left := end - time.monotonic()) > 0:
                    if server._stopping.is_set():
                        return False
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                    if readable:
                        try:
                            gone = not self.connection.recv(1, socket.MSG_PEEK)
                        except OSError:
                            gone = True
                        if gone:
                            with server._lock:
                                server.cancelled += 1
                            self.close_connection = True
                            return False
                        time.sleep(min(left, 0.05))
                return True

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/health":  # vLLM's liveness probe, for routers
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path.rstrip("/").endswith("/models"):
                    self._json(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {"id": server.model, "object": "model", "owned_by": "scripted"}
                            ],
                        },
                    )
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                server._log(body, self.client_address, self.headers.get("Authorization"))
                try:
                    self._answer(body)
                finally:
                    server._done()

            def _answer(self, body: dict[str, Any]) -> None:
                reply = server.responder(body)
                if isinstance(reply, str):
                    reply = Reply(content=reply)
                if reply.delay and not self._wait(reply.delay):
                    return
                if reply.fault == "reset":
                    self._reset()
                    return
                if reply.status != 200:
                    self._json(
                        reply.status,
                        {
                            "error": {
                                "message": reply.error,
                                "type": "scripted",
                                "code": reply.status,
                            }
                        },
                        reply.headers,
                    )
                    return
                prompt = reply.prompt_tokens
                if prompt is None:
                    prompt = sum(
                        word_count(m.get("content") if isinstance(m.get("content"), str) else "")
                        for m in body.get("messages", [])
                    )
                generated = reply.completion_tokens
                if generated is None:
                    generated = word_count(reply.content) + word_count(reply.reasoning_content)
                usage: dict[str, Any] = {
                    "prompt_tokens": prompt,
                    "completion_tokens": generated,
                    "total_tokens": prompt + generated,
                }
                if body.get("stream"):
                    self._stream(body, reply, usage)
                    return
                message: dict[str, Any] = {"role": "assistant", "content": reply.content}
                if reply.reasoning_content is not None:
                    message["reasoning_content"] = reply.reasoning_content
                if reply.tool_calls:
                    message["tool_calls"] = reply.tool_calls
                completion: Any = {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": server.model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": reply.finish_reason}
                    ],
                    "usage": usage,
                }
                if reply.transform is not None:
                    completion = reply.transform(completion)
                self._json(200, completion, reply.headers, reply.fault, reply.trickle)

            def _stream(self, body: dict[str, Any], reply: Reply, usage: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {
                    "id": "chatcmpl-stream",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": server.model,
                }

                class HungUp(Exception):
                    pass

                def send(choices: list[dict[str, Any]], **extra: Any) -> None:
                    chunk: Any = {**base, "choices": choices, **extra}
                    if reply.transform is not None:
                        chunk = reply.transform(chunk)
                    event = chunk if isinstance(chunk, bytes) else json.dumps(chunk).encode()
                    if not self._send(b"data: " + event + b"\n\n", reply.trickle):
                        raise HungUp

                self.close_connection = True
                try:
                    for word in (reply.reasoning_content or "").split(" "):
                        if word:
                            send([{"index": 0, "delta": {"reasoning_content": word + " "}}])
                    pieces = reply.content.split(" ")
                    if reply.fault == "cut":
                        pieces = pieces[: max(1, len(pieces) // 2)]
                    for i, word in enumerate(pieces):
                        text = word if i == len(pieces) - 1 else word + " "
                        if text:
                            send([{"index": 0, "delta": {"content": text}}])
                    if reply.fault == "cut":
                        self._reset()
                        return
                    if reply.tool_calls:
                        calls = [{"index": i, **c} for i, c in enumerate(reply.tool_calls)]
                        send([{"index": 0, "delta": {"tool_calls": calls}}])
                    while reply.endless:  # until the client hangs up (or the server stops)
                        if not self._wait(reply.trickle or 0.05):
                            return
                        if reply.endless == "comment":
                            if not self._send(b": ping\n\n", 0.0):
                                return
                        else:
                            send([{"index": 0, "delta": {}}])
                    send([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
                    if (body.get("stream_options") or {}).get("include_usage"):
                        send([], usage=usage)
                    self._send(b"data: [DONE]\n\n", reply.trickle)
                except HungUp:
                    return

        return Handler


class RedisNotInstalledError(RuntimeError):
    """No ``redis-server`` binary on PATH."""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process that can be stopped and started again on the same port.

    ``stop(save=True)`` writes an RDB snapshot first, so a restart comes back with the
    data, like a managed Redis that restarts; persistence is otherwise off.

    Args:
        directory: The server's own working directory (RDB file, cluster config).
        extra_args: More ``redis-server`` options (with ``--requirepass PW``, `url` has no
            password: the server's own client uses it to start and stop it).
    """

    def __init__(self, directory: Path, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisNotInstalledError(
                "redis-server is not installed: install it, e.g. "
                "`apt-get install redis-server` or `brew install redis`"
            )
        self.binary = binary
        self.directory = directory
        self.extra_args = list(extra_args)
        args = self.extra_args
        self.password = next(
            (args[i + 1] for i, a in enumerate(args[:-1]) if a == "--requirepass"), None
        )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Starts the server (again) on its port and waits until it answers PING."""
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--dbfilename",
                "dump.rdb",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError as exc:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(
                            f"redis-server did not start on port {self.port}"
                        ) from exc
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, save: bool = False) -> None:
        """Shuts the server down; ``save=True`` keeps its data for the next `start`."""
        if self.proc is None:
            return
        client = redis.Redis(port=self.port, password=self.password)
        try:
            client.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass  # shutdown closes the connection under us
        finally:
            client.close()
        self.proc.wait(timeout=20)
        self.proc = None

    def kill(self) -> None:
        """Kills the server at once (no save)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
