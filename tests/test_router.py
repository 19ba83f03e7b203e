"""Several replicas behind ``vllm-router``: trajectories spread over them, a replica dying
mid-run loses none, and what the router cannot fail over (a stream already under way)
pacore retries itself."""

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.types import RetryPolicy

from pacore_graph import ChatOpenAICompatible, create_pacore_graph, should_retry, to_record
from pacore_graph.errors import IncompleteResponseError
from pacore_graph.testing import Reply, ScriptedServer
from tests.conftest import final_state_while_streaming, wait_for
from tests.servers import free_port

PROBLEM = "What is 2 + 2?"
ANSWER = "<think>two and two</think>\\boxed{4}"
FAST = RetryPolicy(initial_interval=0.01, max_interval=0.05, max_attempts=4, retry_on=should_retry)


def router_binary() -> str:
    """The ``vllm-router`` console script of this environment (the ``test`` extra)."""
    beside = Path(sys.executable).with_name("vllm-router")
    found = str(beside) if beside.exists() else shutil.which("vllm-router")
    assert found, "vllm-router is not installed: pip install -e '.[test]'"
    return found


@contextlib.contextmanager
def vllm_router(*workers: ScriptedServer, policy: str = "round_robin") -> Iterator[str]:
    """``vllm-router`` on free loopback ports in front of ``workers``; yields its base_url.

    Round robin makes both replicas take calls here; cache_aware (the router's default)
    would send the K identical prompts of a round to one replica, as it should in
    production (one prefix cache), and spread problems instead.
    """
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                router_binary(),
                "--worker-urls",
                *(f"http://127.0.0.1:{w.port}" for w in workers),
                "--policy",
                policy,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--prometheus-port",
                str(free_port()),
                "--worker-startup-check-interval",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready(proc, port, log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def wait_until_ready(proc: subprocess.Popen, port: int, log) -> None:
    """Waits for the router's ``/health`` (200 once every worker answered its own)."""

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_for(lambda: proc.poll() is not None or healthy(), timeout=60)
        ready = proc.poll() is None
    except AssertionError:  # not healthy in time
        ready = False
    if not ready:
        log.seek(0)
        raise AssertionError(f"vllm-router did not become ready:\n{log.read().decode()}")


def model_at(base_url: str) -> ChatOpenAICompatible:
    return ChatOpenAICompatible(base_url=base_url, model="scripted", api_key="test-key")


def solve(model: ChatOpenAICompatible, rounds: list[int]) -> dict:
    graph = create_pacore_graph(model, rounds=rounds, retry_policy=FAST).compile()
    return asyncio.run(graph.ainvoke({"messages": [("user", PROBLEM)]}))


def assert_nothing_lost_of(out: dict, trajectories: int) -> None:
    assert len(out["pacore"]["trajectories"]) == trajectories
    assert {t["status"] for t in out["pacore"]["trajectories"]} == {"finished"}
    assert to_record(out)["failed"] == 0


def assert_nothing_lost(out: dict, trajectories: int) -> None:
    assert_nothing_lost_of(out, trajectories)
    assert out["messages"][-1].content == "\\boxed{4}"


def test_trajectories_spread_over_the_replicas_behind_the_router(scripted):
    a, b = scripted(lambda body: ANSWER), scripted(lambda body: ANSWER)
    with vllm_router(a, b) as url:
        out = solve(model_at(url), [4])
    assert_nothing_lost(out, 4 + 1)
    assert len(a.requests) + len(b.requests) == 5
    assert a.requests and b.requests


class DyingReplica:
    """The responder of a replica that crashes on its ``at``-th call: that call and any
    call in flight with it are held until the replica has stopped listening, then their
    connections are reset, as a crashed ``vllm serve`` leaves them."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0
        self.crashing = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> Reply:
        with self.lock:
            self.calls += 1
            if self.calls >= self.at:
                self.crashing.set()
        if self.crashing.is_set():
            assert self.stopped.wait(30), "the replica was not stopped"
            return Reply(fault="reset")
        return Reply(content=ANSWER)

    def stop_when_crashing(self, server: ScriptedServer) -> threading.Thread:
        def stop() -> None:
            if self.crashing.wait(60):
                server.stop()  # refuses new connections from here on
                self.stopped.set()

        thread = threading.Thread(target=stop, daemon=True)
        thread.start()
        return thread


def test_a_replica_dying_mid_run_loses_no_trajectory(scripted):
    healthy = scripted(lambda body: ANSWER)
    dying = DyingReplica(at=3)
    doomed = ScriptedServer(dying).start()
    stopper = dying.stop_when_crashing(doomed)
    try:
        with vllm_router(healthy, doomed) as url:
            out = solve(model_at(url), [8])
    finally:
        dying.crashing.set()  # let the stopper end if the run never got there
        stopper.join(30)
        if not dying.stopped.is_set():
            doomed.stop()
    assert dying.stopped.is_set()  # the replica died with a call in flight
    assert_nothing_lost(out, 8 + 1)
    # The calls the dead replica never answered were answered by the other one.
    assert len(healthy.requests) >= 8 + 1 - (dying.at - 1)


def test_a_stream_cut_by_a_dying_replica_reaches_the_client_and_pacore_asks_again(scripted):
    """The router retries a call that got no answer, but cannot take back a stream that
    has begun: the client sees it end without a finish_reason. ChatOpenAICompatible
    raises IncompleteResponseError for that, and the node's RetryPolicy asks again."""
    whole = "the answer is \\boxed{4} after checking"
    cut = scripted(lambda body: Reply(content=whole, fault="cut"))
    with vllm_router(cut) as url:
        model = model_at(url)

        async def stream() -> str:
            return "".join([chunk.text async for chunk in model.astream(PROBLEM)])

        with pytest.raises(IncompleteResponseError):
            asyncio.run(stream())

    streams = {"n": 0}

    def cut_first_stream(body: dict) -> Reply:
        if body.get("stream"):
            streams["n"] += 1
        return Reply(content=whole, fault="cut" if streams["n"] == 1 else None)

    flaky = scripted(cut_first_stream)
    with vllm_router(flaky) as url:
        graph = create_pacore_graph(model_at(url), rounds=[1], retry_policy=FAST).compile()

        out = final_state_while_streaming(graph, {"messages": [("user", PROBLEM)]})
    assert out["messages"][-1].content == whole
    assert_nothing_lost_of(out, 1 + 1)
    assert len(flaky.requests) == 1 + 1 + 1  # the cut stream was asked again, through the router
