"""A streamed reply is bounded in memory whatever the size of one SSE event: a server that
sends one endless event (no newline) is hung up on once ``max_reply_bytes`` is passed, with
the one-line reply-size error, rather than after the whole event is buffered."""

import re
from collections.abc import Iterator

import pytest

from pacore_graph.errors import ReplyTooLargeError
from tests.conftest import model_for
from tests.model_calls import STREAMED, call
from tests.raw_http import RawServer

LIMIT = 64 * 1024
MESSAGE = "reply too large: over 64 KiB (max_reply_bytes)"
EVENT = 64 * 1024 * 1024  # one event of 64 MB, 1,000 times the limit
PIECE = 16 * 1024
HEAD = b'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", '
HEAD += b'"choices": [{"index": 0, "delta": {"content": "'
TAIL = b'"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'


class EndlessEventServer(RawServer):
    """Answers every request with an SSE stream of one chunk whose content is ``EVENT`` bytes,
    sent without a newline until its end."""

    content_type = "text/event-stream"
    send_buffer = PIECE

    def pieces(self) -> Iterator[bytes]:
        yield HEAD
        piece = b"a" * PIECE
        for _ in range(EVENT // PIECE):
            yield piece
        yield TAIL


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
