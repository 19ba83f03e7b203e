"""``pacore serve`` stopped (SIGTERM) while runs outlast the grace period: every client
still gets the documented answer, 503 ``run_cancelled`` (a stream: an error event, then
``[DONE]``), and the log holds no traceback."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading
from typing import Any

import httpx

from pacore_graph.testing import Reply
from tests.conftest import wait_for
from tests.serve_helpers import (
    Served,
    is_synthesis,
    question,
    respond,
    serve_command,
    serve_process,
    wait_ready,
)
from tests.servers import free_port


def held(body: dict[str, Any]) -> Reply:
    """Exploration calls are held until their client (the run) hangs up."""
    return respond(body) if is_synthesis(body) else Reply(content="late", delay=120)


def plain(served: Served) -> httpx.Response:
    return served.post({"model": "pacore-1", "messages": question()})


def streamed(served: Served, began: threading.Event) -> tuple[int, list[str]]:
    body = {"model": "pacore-1", "messages": question(), "stream": True}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body, timeout=60) as r:
        began.set()
        return r.status_code, [line for line in r.iter_lines() if line.startswith("data: ")]


def test_runs_past_the_grace_period_end_with_run_cancelled(scripted, tmp_path):
    upstream = scripted(held)
    port = free_port()
    log = tmp_path / "serve.log"
    with (
        serve_process(serve_command(upstream, port), log, port) as (served, proc),
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        wait_ready(served, proc, log)
        began = threading.Event()
        waiting, streaming = pool.submit(plain, served), pool.submit(streamed, served, began)
        # Both runs' exploration calls are held, and the stream has begun.
        wait_for(lambda: len(upstream.requests) == 2 and began.is_set())
        proc.send_signal(signal.SIGTERM)
        response = waiting.result(timeout=60)
        status, events = streaming.result(timeout=60)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # uvicorn re-raises the signal
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "run_cancelled"
    assert status == 200
    assert events[-1] == "data: [DONE]", events
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "run_cancelled"
    wait_for(lambda: upstream.cancelled == 2)  # the held calls were let go
    assert "Traceback" not in log.read_text()
