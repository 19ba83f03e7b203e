"""Each example runs as a user runs it, against a scripted backend."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from pacore_graph.testing import Reply, last_user_text
from tests.servers import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def env_for(server, **extra):
    return {**os.environ, "PACORE_BASE_URL": server.base_url, **extra}


def run_example(name, *args, env):
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def boxed(body):
    if "Reference 1:" in last_user_text(body):
        return "<think>all agree</think>So the orchard has \\boxed{391} trees."
    return "17 rows of 23 make \\boxed{391}."


def test_agent_step_example(scripted):
    server = scripted(boxed)
    result = run_example("agent_step.py", "--rounds", "3", env=env_for(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Trees in the north orchard: 391"
    first = server.requests[0]["messages"]
    # PaCoRe saw the agent's tool call and the tool's result like any chat step would.
    assert first[1]["tool_calls"][0]["function"]["name"] == "orchard_layout"
    assert first[2]["role"] == "tool" and first[2]["tool_call_id"] == "layout-1"
    assert first[2]["content"] == "The north orchard has 17 rows with 23 trees in each row."
    assert len(server.requests) == 4


def test_progress_bar_example(scripted):
    server = scripted(lambda body: Reply(content=boxed(body), completion_tokens=7))
    result = run_example("progress_bar.py", "17*23?", "--rounds", "4,2", env=env_for(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "So the orchard has \\boxed{391} trees."
    bar = result.stderr.replace("\r", "\n")
    assert "round 3/3 (K=1)" in bar
    assert "7/7" in bar and "tokens=49" in bar


def test_progress_bar_example_counts_failed_trajectories(scripted):
    calls = itertools.count(1)

    def responder(body):
        if next(calls) == 1:  # one exploration call fails for good (400 is not retried)
            return Reply(status=400, error="too long")
        return Reply(content=boxed(body), completion_tokens=7)

    server = scripted(responder)
    result = run_example("progress_bar.py", "17*23?", "--rounds", "4", env=env_for(server))
    assert result.returncode == 0, result.stderr
    bar = result.stderr.replace("\r", "\n")
    assert "5/5" in bar and "tokens=28, unfinished=1" in bar


def start_app(env, port):
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "web_app.py"), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1)
            return proc
        except httpx.HTTPError as exc:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()) from exc
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("web app did not start")


def test_web_app_example_survives_a_restart(scripted, redis_url):
    server = scripted(boxed)
    env = env_for(server, REDIS_URL=redis_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start_app(env, port)
    try:
        r = httpx.post(
            f"{base}/solve",
            json={"problem": "17*23?", "thread_id": "t1", "rounds": "2"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "new"
        assert r.json()["answer"] == "So the orchard has \\boxed{391} trees."
        assert httpx.post(f"{base}/solve", json={"problem": " "}).status_code == 422
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)
    calls = len(server.requests)
    app = start_app(env, port)  # a new process: only Redis remembers
    try:
        state = httpx.get(f"{base}/threads/t1", timeout=10).json()
        assert state["trajectories"] == 3 and state["pending"] == []
        # The same question under the same settings: a thread answered under others runs
        # the question again (pacore_graph.threads).
        again = {"problem": "17*23?", "thread_id": "t1", "rounds": "2"}
        r = httpx.post(f"{base}/solve", json=again, timeout=60)
        assert r.json()["status"] == "finished"
        assert r.json()["answer"] == "So the orchard has \\boxed{391} trees."
        assert len(server.requests) == calls  # no model call for a finished thread
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)


def test_web_app_answers_bad_input_with_422_and_one_line(scripted):
    def responder(body):
        if "fail" in last_user_text(body):
            return Reply(status=400, error="context length exceeded")
        return boxed(body)

    server = scripted(responder)
    env = {k: v for k, v in env_for(server).items() if k != "REDIS_URL"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start_app(env, port)
    try:
        cases = [
            ({"problem": "17*23?", "rounds": "banana"}, "unknown rounds 'banana'"),
            ({"problem": "17*23?", "rounds": "4,0"}, "every round needs K >= 1"),
            ({"problem": "17*23?", "settings": {"min_success": 1.5}}, "min_success must be"),
            ({"problem": "17*23?", "settings": {"max_seconds": -1}}, "max_seconds must be"),
            ({"problem": "17*23?", "settings": {"temprature": 0.6}}, "unknown PaCoRe setting"),
            ({"messages": [{"role": "assistant", "content": "hi"}]}, "no user message"),
            ({"messages": [{"role": "robot", "content": "hi"}]}, "bad messages"),
            ({"problem": "x", "messages": [{"role": "user", "content": "y"}]}, "either"),
            ({"problem": " "}, "problem is empty"),
            ({"problem": "17*23?", "max_tokens": "lots"}, "max_tokens: "),
            ({"problem": ["17*23?"]}, "problem: "),
        ]
        for body, fragment in cases:
            r = httpx.post(f"{base}/solve", json=body, timeout=30)
            assert r.status_code == 422, (body, r.status_code, r.text)
            detail = r.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail, detail
            assert fragment in detail, (body, detail)
        assert server.requests == []  # bad input never reaches the model

        # A run the backend fails is 502; another question on its thread is a conflict.
        r = httpx.post(f"{base}/solve", json={"problem": "fail?", "thread_id": "t"}, timeout=60)
        assert r.status_code == 502 and "trajectories finished" in r.json()["detail"], r.text
        r = httpx.post(f"{base}/solve", json={"problem": "other?", "thread_id": "t"}, timeout=60)
        assert r.status_code == 409 and "another question" in r.json()["detail"], r.text
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)
    assert "Traceback" not in app.stderr.read().decode()
