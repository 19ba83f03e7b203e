"""A loopback HTTP server on a bare socket, for replies no HTTP library would send: a body
without ``Content-Length``, one endless SSE line."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator


class RawServer:
    """Reads each request whole, answers 200 with the `pieces` of a subclass and
    ``Connection: close``; `sent` counts the bytes each answer got out before the client
    hung up, and `answered` is set after each."""

    content_type = "application/json"
    send_buffer: int | None = None  # SO_SNDBUF: a small one keeps what the kernel takes small

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.answered = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.model = "m"
        threading.Thread(target=self._serve, daemon=True).start()

    def pieces(self) -> Iterator[bytes]:
        raise NotImplementedError

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            if self.send_buffer:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: "
                + self.content_type.encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            sent = 0
            try:
                for piece in self.pieces():
                    sent += conn.send(piece)
            except OSError:
                pass  # the client hung up: what a limit is for
            self.sent.append(sent)
            self.answered.set()

    def stop(self) -> None:
        self.listener.close()
