"""Durable runs: a request with an ``Idempotency-Key`` is a thread in Redis. A client that
hangs up does not stop its run; a retry attaches to it, replays its stored answer, or
resumes it (on another instance too) without asking a finished trajectory again."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from pacore_graph.server import thread_id_for
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import TOO_LATE, Held, saved_trajectories, wait_for
from tests.serve_helpers import (
    ANSWER,
    Served,
    is_synthesis,
    question,
    respond,
    serve_command,
    serve_process,
    serving,
    wait_ready,
)
from tests.servers import free_port


def held_calls(answer_first: int = 0, fail: int = 0) -> Held:
    """Answers the first ``answer_first`` exploration calls at once, fails the next ``fail``
    for good and holds the others until `release` is set, then answers them too (the
    synthesis is never held)."""
    return Held(answer_first, fail=fail, answer="4", final=respond)


def exploration(requests: list[dict[str, Any]]) -> int:
    return sum(not is_synthesis(body) for body in requests)


def hang_up_after_first_event(
    served: Served, body: dict[str, Any], key: str, before: Callable[[], bool] = lambda: True
) -> str:
    """Streams ``body``, reads its first event, waits for ``before``, hangs up; the event's
    line."""
    with httpx.stream(
        "POST",
        f"{served.base_url}/chat/completions",
        json={**body, "stream": True},
        headers={"Idempotency-Key": key},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: closing the iterator closes the connection
        line = next(lines)
        wait_for(before)
        return line


BODY = {"model": "pacore-4", "messages": question()}


def test_a_client_that_hangs_up_and_retries_gets_the_same_run(scripted, redis_url):
    held = held_calls()
    upstream = scripted(held)
    with serving(upstream, redis_url=redis_url) as served:
        assert served.service is not None
        assert hang_up_after_first_event(served, BODY, "retry-1").startswith("data: ")
        wait_for(lambda: len(upstream.requests) == 4)
        assert served.service.runs.executing() == 1  # it goes on without its client
        held.release.set()
        stream = served.client().chat.completions.create(
            **BODY, stream=True, extra_headers={"Idempotency-Key": "retry-1"}
        )
        chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == ANSWER
    assert len(upstream.requests) == 5  # K = [4, 1]: nothing was asked twice
    report = chunks[-1].model_extra["pacore"]["runs"][0]
    assert report["thread_id"] == thread_id_for("retry-1")


def test_a_run_finishes_without_its_client_and_a_retry_replays_it(scripted, redis_url):
    held = held_calls()
    upstream = scripted(held)
    with serving(upstream, redis_url=redis_url) as served:
        assert served.service is not None
        service = served.service
        hang_up_after_first_event(served, BODY, "replay-1")
        wait_for(lambda: len(upstream.requests) == 4)
        held.release.set()
        wait_for(lambda: len(upstream.requests) == 5 and service.runs.executing() == 0)
        headers = {"Idempotency-Key": "replay-1"}
        again = served.client().chat.completions.create(**BODY, extra_headers=headers)
        streamed = served.client().chat.completions.create(
            **BODY, stream=True, extra_headers=headers
        )
        content = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert again.choices[0].message.content == content == ANSWER
    assert len(upstream.requests) == 5  # both answered from Redis
    store = redis.Redis.from_url(redis_url)
    keys = list(store.scan_iter(match=f"pacore:{{{thread_id_for('replay-1')}}}:*"))
    assert keys and all(0 < store.ttl(key) <= 7 * 86400 for key in keys)  # threads expire
    store.close()
    report = again.model_extra["pacore"]["runs"][0]
    assert report["thread_status"] == "finished" and report["trajectories"] == 5
    assert again.usage.completion_tokens == report["ttc_tokens"] > 0


def test_a_failed_run_resumes_asking_only_the_failed_trajectories(scripted, redis_url):
    held = held_calls(answer_first=2, fail=2)
    held.release.set()
    upstream = scripted(held)
    body = {**BODY, "pacore": {"min_success": 3}}
    with serving(upstream, redis_url=redis_url) as served:
        headers = {"Idempotency-Key": "quorum-1"}
        failed = served.post(body, headers)
        assert failed.status_code == 502
        assert (
            "round 1: 2 of 4 trajectories finished, 3 needed" in failed.json()["error"]["message"]
        )
        before = len(upstream.requests)
        retried = served.post(body, headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["choices"][0]["message"]["content"] == ANSWER
    new = upstream.requests[before:]
    assert (exploration(new), len(new) - exploration(new)) == (2, 1)
    final = last_user_text(new[-1])
    assert "candidate 0: 4" in final and "candidate 1: 4" in final
    assert retried.json()["pacore"]["runs"][0]["thread_status"] == "interrupted"


@pytest.mark.parametrize("durable", [True, False], ids=["redis", "in-process"])
def test_a_key_used_for_another_request_is_422(scripted, redis_url, durable):
    upstream = scripted(respond)
    options = {"redis_url": redis_url} if durable else {}
    with serving(upstream, **options) as served:
        headers = {"Idempotency-Key": "reuse-1"}
        first = served.post({"model": "pacore-1", "messages": question()}, headers)
        assert first.status_code == 200, first.text
        calls = len(upstream.requests)
        same = served.post({"model": "pacore-1", "messages": question()}, headers)
        assert same.json()["id"] == first.json()["id"]
        assert same.json()["choices"] == first.json()["choices"]
        assert len(upstream.requests) == calls  # replayed, not run again
        for other in (
            {"model": "pacore-1", "messages": question("What is 3+3?")},
            {"model": "pacore-1", "messages": question(), "temperature": 0.1},
            {"model": "pacore-2", "messages": question()},
        ):
            response = served.post(other, headers)
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert len(upstream.requests) == calls


def test_keys_of_different_callers_are_different_threads():
    assert thread_id_for("k", "caller-a") != thread_id_for("k", "caller-b")
    assert thread_id_for("k", "a", 0) != thread_id_for("k", "a", 1)
    assert thread_id_for("k}{x", "a").isalnum() is False  # a digest: no braces reach Redis
    assert "{" not in thread_id_for("k}{x", "a")


def test_cancel_on_disconnect_cancels_the_run_and_its_calls(scripted):
    upstream = scripted(lambda body: Reply(content="slow", delay=30))
    with serving(upstream, cancel_on_disconnect=True) as served:
        assert served.service is not None
        service = served.service
        hang_up_after_first_event(
            served, BODY, "cancel-1", before=lambda: len(upstream.requests) == 4
        )
        wait_for(lambda: upstream.cancelled == 4 and service.runs.executing() == 0)
        # A plain request that hangs up is cancelled too.
        with socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1]))) as raw:
            payload = b'{"model": "pacore-2", "messages": [{"role": "user", "content": "hang up"}]}'
            raw.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            wait_for(lambda: len(upstream.requests) == 6)
        wait_for(lambda: upstream.cancelled == 6 and service.runs.executing() == 0)
        metrics = httpx.get(f"{served.url}/metrics").text
    assert 'pacore_runs_total{outcome="cancelled"} 2.0' in metrics


def test_a_retry_on_another_instance_resumes_after_the_first_is_killed(
    scripted, redis_url, tmp_path
):
    responder = Held(answer_first=2, late=TOO_LATE)
    upstream = scripted(responder)
    port = free_port()
    # The first instance is a process (it is killed), the second runs here. A short lease:
    # the retry on the second waits until the killed instance's lapses.
    command = serve_command(
        upstream, port, "--redis-url", redis_url, "--lease-ttl", "2", "--log-level", "WARNING"
    )
    key = "kill-1"
    headers = {"Idempotency-Key": key}
    with (
        serve_process(command, tmp_path / "a.log", port) as (a, proc_a),
        serving(upstream, redis_url=redis_url, saver_options={"lease_ttl": 2}) as b,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        wait_ready(a, proc_a, tmp_path / "a.log")
        try:
            first = pool.submit(a.post, BODY, headers)
            wait_for(lambda: len(upstream.requests) == 4)  # 2 answered, 2 held
            wait_for(lambda: saved_trajectories(redis_url, thread_id_for(key)) == 2)
            os.killpg(proc_a.pid, signal.SIGKILL)
            proc_a.wait(timeout=10)
            with pytest.raises(httpx.TransportError):
                first.result(timeout=30)
        finally:
            responder.holding = False
            responder.release.set()
        before = len(upstream.requests)
        reply = b.post(BODY, headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "\\boxed{391}"
    new = upstream.requests[before:]
    # Only the two held trajectories and the final synthesis were asked again.
    assert (exploration(new), len(new) - exploration(new)) == (2, 1)
    final = last_user_text(new[-1])
    assert "candidate 0: 391" in final and "candidate 1: 391" in final
    report = reply.json()["pacore"]["runs"][0]
    assert report["thread_status"] == "interrupted" and report["trajectories"] == 5
