"""``pacore serve`` for tests: the app in-process on uvicorn (a thread of its own, a free
loopback port), or the CLI as a subprocess; both awaited on ``GET /health``."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import uvicorn

from pacore_graph import ChatOpenAICompatible, create_pacore_graph
from pacore_graph.server import ServeSettings, Service, create_app
from pacore_graph.testing import Reply, ScriptedServer, last_user_text
from tests.conftest import pacore_argv, stop_group, wait_for
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_KEY = "sk-upstream-secret-7731"
THINKING = "both references agree"
ANSWER = "2 + 2 = 4."


def respond(body: dict[str, Any]) -> Reply:
    """Round 1 guesses; the synthesis round (its prompt lists references) answers."""
    if "Reference 1:" in last_user_text(body):
        return Reply(content=f"<think>{THINKING}</think>{ANSWER}")
    return Reply(content="<think>two and two</think>It is 4.")


def is_synthesis(body: dict[str, Any]) -> bool:
    return "Reference 1:" in last_user_text(body)


def healthy(url: str) -> bool:
    with (
        contextlib.suppress(OSError, ValueError),
        urllib.request.urlopen(f"{url}/health", timeout=1) as response,
    ):
        return response.status == 200
    return False


@dataclass
class Served:
    """A running server: its root URL and, in-process, its `Service`."""

    url: str
    service: Service | None = None

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self, api_key: str = "client-key", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, **kwargs)

    def async_client(self, api_key: str = "client-key", **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, **kwargs)

    def post(
        self, body: Any, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """``POST /v1/chat/completions``; ``body`` as JSON, or raw bytes."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        return httpx.post(
            f"{self.base_url}/chat/completions",
            content=content,
            headers=headers,
            timeout=kwargs.pop("timeout", 60),
            **kwargs,
        )


def graph_for(
    upstream: ScriptedServer, model_kwargs: dict[str, Any] | None = None, **defaults: Any
):
    model = ChatOpenAICompatible(
        base_url=upstream.base_url,
        model=upstream.model,
        api_key=UPSTREAM_KEY,
        **(model_kwargs or {}),
    )
    return create_pacore_graph(model, **defaults).compile()


@contextlib.contextmanager
def serving(
    upstream: ScriptedServer,
    *,
    model_kwargs: dict[str, Any] | None = None,
    graph_defaults: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Served]:
    """The app on uvicorn in a thread, until the block ends."""
    port = free_port()
    graph = graph_for(upstream, model_kwargs, **(graph_defaults or {}))
    service = Service(ServeSettings(port=port, **settings), graph)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, name="pacore-serve", daemon=True)
    thread.start()
    served = Served(f"http://127.0.0.1:{port}", service)
    try:
        wait_for(lambda: not thread.is_alive() or healthy(served.url), 30)
        assert thread.is_alive(), "the server did not start"
        yield served
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def serve_command(upstream: ScriptedServer, port: int, *extra: str) -> list[str]:
    """``pacore serve`` as a subprocess argv, pointed at ``upstream``."""
    return pacore_argv(
        *("serve", "--base-url", upstream.base_url, "--model", upstream.model),
        *("--api-key", UPSTREAM_KEY, "--port", str(port), *extra),
    )


@contextlib.contextmanager
def serve_process(
    command: list[str], log: Path, port: int
) -> Iterator[tuple[Served, subprocess.Popen]]:
    """The CLI in a process group of its own; stopped (SIGTERM, then SIGKILL) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    served = Served(f"http://127.0.0.1:{port}")
    try:
        yield served, proc
    finally:
        stop_group(proc)


def wait_ready(served: Served, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    wait_for(lambda: proc.poll() is not None or healthy(served.url), timeout)
    assert proc.poll() is None, f"pacore serve exited:\n{log.read_text(errors='replace')}"


def question(text: str = "What is 2+2?") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
