"""A streamed reply is bounded in memory whatever the size of one SSE event: a server that
sends one endless event (no newline) is hung up on once ``max_reply_bytes`` is passed, with
the one-line reply-size error, rather than after the whole event is buffered."""

import re
import socket
import threading

import pytest

from pacore_graph.errors import ReplyTooLargeError
from tests.conftest import model_for
from tests.model_calls import STREAMED, call

LIMIT = 64 * 1024
MESSAGE = "reply too large: over 64 KiB (max_reply_bytes)"
EVENT = 64 * 1024 * 1024  # one event of 64 MB, 1,000 times the limit
PIECE = 16 * 1024
HEAD = b'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", '
HEAD += b'"choices": [{"index": 0, "delta": {"content": "'
TAIL = b'"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


class EndlessEventServer:
    """Answers every request with an SSE stream of one chunk whose content is ``EVENT`` bytes,
    sent without a newline until its end. Counts the bytes it managed to send."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.answered = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.model = "m"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIECE)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            piece = b"a" * PIECE
            sent = 0
            try:
                sent += conn.send(HEAD)
                while sent < EVENT:
                    sent += conn.send(piece)
                conn.sendall(TAIL)
            except OSError:
                pass  # the client hung up: what the limit is for
            self.sent.append(sent)
            self.answered.set()

    def stop(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("way", STREAMED)
def test_one_endless_event_is_stopped_past_the_limit(way):
    server = EndlessEventServer()
    try:
        model = model_for(server, max_reply_bytes=LIMIT)  # type: ignore[arg-type]
        with pytest.raises(ReplyTooLargeError, match=f"^{re.escape(MESSAGE)}$"):
            call(model, way)
    finally:
        server.stop()
    assert server.answered.wait(60)
    # The limit, and what the kernel's socket buffers took besides; not the event's 64 MB.
    (sent,) = server.sent
    assert sent < 4 * 1024 * 1024
