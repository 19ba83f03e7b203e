"""Shared fixtures: a scripted OpenAI-compatible server and a real Redis server on loopback."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from pacore_graph import ChatOpenAICompatible
from pacore_graph.testing import Responder, ScriptedServer

pytest_plugins = ["tests.redis_fixtures"]


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    """Starts scripted servers on free loopback ports; all are stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(responder: Responder | None = None, **kwargs) -> ScriptedServer:
        server = ScriptedServer(responder, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def model_for(server: ScriptedServer, **kwargs) -> ChatOpenAICompatible:
    """A pooled OpenAI-compatible model pointed at a scripted server."""
    return ChatOpenAICompatible(
        base_url=server.base_url, model=server.model, **{"api_key": "test-key", **kwargs}
    )


def pacore_argv(*args: str) -> list[str]:
    """The ``pacore`` command with ``args``, as a subprocess argv (this interpreter's)."""
    return [sys.executable, "-m", "pacore_graph.cli", *args]


def solve_command(server: ScriptedServer, problem: str, *extra: str) -> list[str]:
    """``pacore solve`` as a subprocess argv, pointed at ``server``."""
    return pacore_argv("solve", problem, "--base-url", server.base_url, *extra)


def stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM to a server's process group (a graceful shutdown), SIGKILL if it is still
    running ``grace`` seconds later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


class Gate:
    """A responder that holds every reply until `open_when`'s condition holds, then answers
    with ``reply``: calls pile up as far as the client lets them, with no timing involved."""

    def __init__(self, reply: Callable[[dict[str, Any]], Any]) -> None:
        self.reply = reply
        self.opened = threading.Event()

    def __call__(self, body: dict[str, Any]) -> Any:
        self.opened.wait(30)
        return self.reply(body)

    def open_when(self, predicate: Callable[[], bool]) -> None:
        """Opens the gate (from a watcher thread) once ``predicate`` holds."""

        def watch() -> None:
            wait_for(predicate)
            self.opened.set()

        threading.Thread(target=watch, daemon=True).start()


def saved_trajectories(redis_url: str, thread_id: str, prefix: str = "pacore") -> int:
    """How many trajectory results of ``thread_id`` are in Redis (task writes), for tests
    that must kill a run only once its finished calls are saved."""
    client = redis.Redis.from_url(redis_url)
    try:
        values = client.hvals(f"{prefix}:{{{thread_id}}}:writes")
    finally:
        client.close()
    # A trajectory task is a Send ("__pregel_push" path); prepare's reset writes the channel too.
    return sum(v.startswith(b"~__pregel_push") and b"\x00trajectories\x00" in v for v in values)


def final_state_while_streaming(graph: Any, input: dict[str, Any]) -> dict[str, Any]:
    """Runs ``graph`` (async) with token streaming on, as a chat UI would; its final state."""

    async def run() -> dict[str, Any]:
        state: dict[str, Any] = {}
        async for mode, chunk in graph.astream(input, stream_mode=["messages", "values"]):
            if mode == "values":
                state = chunk
        return state

    return asyncio.run(run())
