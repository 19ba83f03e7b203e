"""Crash-resume through the CLI with Redis checkpoints (one server, or a Cluster): nothing
finished is asked again."""

import os
import signal
import subprocess

import pytest

from pacore_graph.testing import last_user_text
from tests.conftest import (
    TOO_LATE,
    Held,
    run_in_process,
    saved_trajectories,
    solve_command,
    wait_for,
)

PROBLEM = "What is 17 * 23?"


def cli(server, redis_url, *extra):
    return solve_command(
        server,
        PROBLEM,
        *("--rounds", "4", "--concurrency", "4", "--redis-url", redis_url),
        *("--thread-id", "crash-1", "--lease-ttl", "2", *extra),
    )


@pytest.mark.parametrize("store", ["redis_url", "redis_cluster3_url"])
def test_sigkill_then_rerun_requests_only_unfinished_trajectories(scripted, request, store):
    redis_url = request.getfixturevalue(store)
    responder = Held(answer_first=2, late=TOO_LATE)
    server = scripted(responder)
    proc = subprocess.Popen(cli(server, redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(server.requests) == 4)  # 2 answered, 2 held
        wait_for(lambda: saved_trajectories(redis_url, "crash-1") == 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        responder.holding = False
        responder.release.set()
    before = len(server.requests)

    # The rerun waits until the killed run's hold on the thread lapsed (--lease-ttl). On a
    # Cluster it names one node by a redis:// URL: cluster mode is detected.
    node_url = redis_url.replace("redis+cluster://", "redis://")
    rerun = run_in_process(cli(server, node_url, "--wait"))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "\\boxed{391}"
    assert "resuming" in rerun.stderr
    new = server.requests[before:]
    # Only the two held trajectories and the final synthesis were asked again.
    assert sum("Reference 1:" not in last_user_text(b) for b in new) == 2
    assert sum("Reference 1:" in last_user_text(b) for b in new) == 1
    final_prompt = last_user_text(new[-1])
    assert "candidate 0: 391" in final_prompt and "candidate 1: 391" in final_prompt

    # A finished thread prints its stored answer without calling the backend.
    again = run_in_process(cli(server, redis_url))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "\\boxed{391}"
    assert "already answered" in again.stderr
    assert len(server.requests) == before + 3


def test_redis_down_mid_run_then_rerun_finishes(scripted, redis_server, redis_url):
    responder = Held(answer_first=2, late=TOO_LATE)
    server = scripted(responder)
    proc = subprocess.Popen(
        cli(server, redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: len(server.requests) == 4)
        wait_for(lambda: saved_trajectories(redis_url, "crash-1") == 2)
        redis_server.stop(save=True)  # Redis goes away, keeping what it had (like a restart)
        responder.holding = False
        responder.release.set()  # the held calls now fail with 503 and get retried
        _, stderr = proc.communicate(timeout=120)
    finally:
        responder.release.set()
        if redis_server.proc is None:
            redis_server.start()
    assert proc.returncode != 0
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert lines[-1].startswith("pacore: error: Redis at redis://127.0.0.1:")
    assert "rerun the same command to resume" in lines[-1]

    before = len(server.requests)
    # The failed run could not release its hold while Redis was away: it lapses first.
    waiting = cli(server, redis_url, "--wait")
    rerun = run_in_process(waiting)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "\\boxed{391}"
    new = server.requests[before:]
    # The two trajectories finished before the outage were not asked again.
    assert [("Reference 1:" in last_user_text(b)) for b in new] == [False, False, True]
    assert "candidate 0: 391" in last_user_text(new[-1])
