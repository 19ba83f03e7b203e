"""``langgraph dev`` serves the PaCoRe graph of ``langgraph.json`` to Studio and the SDK.

The dev server runs as a subprocess, offline, against a scripted endpoint started here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from langgraph_sdk import get_client

from pacore_graph.testing import Reply, ScriptedServer, last_user_text

CONFIG = Path(__file__).resolve().parents[1] / "langgraph.json"
QUESTION = {"messages": [{"role": "user", "content": "What is 2+2?"}]}
ANSWER = "2 + 2 = 4."
STARTUP_TIMEOUT_S = 60


def respond(body: dict) -> Reply:
    """Round 1 guesses; the synthesis round (its prompt lists references) answers."""
    if "Reference 1:" in last_user_text(body):
        return Reply(content=f"<think>both references agree</think>{ANSWER}")
    return Reply(content="<think>two and two</think>It is 4.")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/ok", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"langgraph dev not ready in {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def langgraph_dev(workdir: Path, **env: str) -> Iterator[str]:
    """Runs ``langgraph dev`` on a free port in its own process group; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--config", str(CONFIG)]
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PACORE_MODEL")}
    environ.update(
        # Offline: no tracing, no analytics, no PyPI version check.
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        OPENAI_API_KEY="test-key",
        **env,
    )
    log = workdir / "langgraph-dev.log"
    with log.open("wb") as out:
        # cwd is a scratch folder: the dev server keeps its `.langgraph_api/` there.
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def backend() -> Iterator[ScriptedServer]:
    with ScriptedServer(respond, model="scripted-pacore") as server:
        yield server


@pytest.fixture(scope="module")
def studio(backend: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with langgraph_dev(tmp_path_factory.mktemp("studio"), PACORE_BASE_URL=backend.base_url) as url:
        yield url


async def solve(url: str) -> tuple[str, dict]:
    """Runs PaCoRe once on a new thread; returns the thread id and the run's output."""
    client = get_client(url=url)
    thread = await client.threads.create()
    out = await client.runs.wait(
        thread["thread_id"], "pacore", input=QUESTION, context={"rounds": 2}
    )
    return thread["thread_id"], out


async def test_run_answers_with_the_endpoints_model(studio, backend):
    before = len(backend.requests)
    _, out = await solve(studio)
    answer = out["messages"][-1]
    assert answer["type"] == "ai"
    assert answer["content"] == ANSWER
    assert answer["additional_kwargs"]["reasoning_content"] == "both references agree"
    assert answer["response_metadata"]["pacore"]["round_vector"] == [2, 1]
    calls = backend.requests[before:]
    assert len(calls) == 3  # K = [2, 1], from the run's context, not PACORE_ROUNDS' "low"
    assert {c["model"] for c in calls} == {"scripted-pacore"}  # the endpoint's first model


async def test_stream_sends_progress_events_and_node_updates(studio):
    client = get_client(url=studio)
    thread = await client.threads.create()
    custom, nodes = [], []
    async for part in client.runs.stream(
        thread["thread_id"],
        "pacore",
        input=QUESTION,
        context={"rounds": 2},
        stream_mode=["custom", "updates"],
    ):
        if part.event == "custom":
            custom.append(part.data)
        elif part.event == "updates":
            nodes.extend(part.data)
    kinds = [event["type"] for event in custom]
    assert kinds[0] == "round_started" and custom[0]["round_vector"] == [2, 1]
    assert kinds.count("round_started") == kinds.count("round_finished") == 2
    assert kinds.count("trajectory_finished") == 3
    assert kinds[-1] == "answer" and custom[-1]["content"] == ANSWER
    round_1 = ["prepare", "trajectory", "trajectory", "compact"]
    assert nodes == [*round_1, "synthesize", "trajectory", "compact", "answer"]


async def test_thread_state_keeps_the_record(studio):
    thread_id, _ = await solve(studio)
    state = await get_client(url=studio).threads.get_state(thread_id)
    values = state["values"]
    assert state["next"] == []
    assert values["round_vector"] == [2, 1]
    assert sorted((t["round"], t["index"]) for t in values["trajectories"]) == [
        (1, 0),
        (1, 1),
        (2, 0),
    ]
    assert values["messages"][-1]["content"] == ANSWER


async def test_studio_draws_the_graph_and_the_context_form(studio):
    client = get_client(url=studio)
    [assistant] = await client.assistants.search(graph_id="pacore")
    drawn = await client.assistants.get_graph(assistant["assistant_id"])
    assert {node["id"] for node in drawn["nodes"]} == {
        "__start__",
        "prepare",
        "trajectory",
        "compact",
        "synthesize",
        "answer",
        "__end__",
    }
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    form = schemas["context_schema"]["properties"]
    assert {"rounds", "temperature", "top_p", "max_tokens", "compaction", "seed"} <= set(form)


async def test_redis_url_checkpoints_threads_in_redis(backend, redis_url, tmp_path):
    store = redis.Redis.from_url(redis_url)
    before = set(store.scan_iter(match="pacore*"))
    env = {"PACORE_BASE_URL": backend.base_url, "REDIS_URL": redis_url}
    with langgraph_dev(tmp_path, **env) as url:
        thread_id, out = await solve(url)
        state = await get_client(url=url).threads.get_state(thread_id)
    assert out["messages"][-1]["content"] == ANSWER
    assert state["values"]["round_vector"] == [2, 1]
    assert set(store.scan_iter(match="pacore*")) - before  # the run's checkpoints
    store.close()
