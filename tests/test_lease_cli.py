"""One writer per thread through ``pacore solve``: two processes on one Redis thread never both
write it, and what Redis keeps is always the answer that was printed."""

import json
import os
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from pacore_graph.testing import last_user_text
from tests.conftest import TOO_LATE, Held, run_in_process, solve_command, wait_for
from tests.servers import free_port
from tests.test_examples import env_for, start_app
from tests.test_lease import _finished, lease_key, stored

PROBLEM = "What is 17 * 23?"


def command(server, redis_url, thread_id, *extra):
    return solve_command(
        server,
        PROBLEM,
        *("--rounds", "4", "--concurrency", "4", "--redis-url", redis_url),
        *("--thread-id", thread_id, "--json", *extra),
    )


def solve(args):
    """A run beside the other processes of a test, or after them: in-process."""
    return run_in_process(args)


def asked(server, start=0):
    """(exploration calls, final calls) among the server's requests from ``start``."""
    texts = [last_user_text(b) for b in server.requests[start:]]
    return sum("Reference 1:" not in t for t in texts), sum("Reference 1:" in t for t in texts)


def test_two_solves_on_one_thread_one_runs_the_other_stops_naming_it(scripted, redis_url):
    gate = Held()
    server = scripted(gate)
    args = command(server, redis_url, "dup")
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        # The calls of whichever run got the thread are held, so the other meets a live run.
        wait_for(lambda: any(p.poll() is not None for p in procs), timeout=60)
    finally:
        gate.release.set()
    loser = next(p for p in procs if p.poll() is not None)
    winner = procs[1 - procs.index(loser)]
    _, err = loser.communicate(timeout=30)
    assert loser.returncode == 2
    assert "Traceback" not in err and "started" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"pacore: error: thread dup is busy: another run holds it (pid {winner.pid} on "
            f"{socket.gethostname()}, lapsing in "
        )
    )
    out, err = winner.communicate(timeout=120)
    assert winner.returncode == 0, err
    assert "thread dup: started" in err
    assert asked(server) == (4, 1)  # one run's calls, not two

    # What Redis keeps is what was printed: a rerun reads it back without a call.
    again = solve(args)
    assert again.returncode == 0, again.stderr
    assert "thread dup: already answered" in again.stderr
    assert json.loads(again.stdout) == json.loads(out)
    assert asked(server) == (4, 1)
    client = redis.Redis.from_url(redis_url)
    assert not client.exists(lease_key("dup"))  # each run let go of the thread
    client.close()


@pytest.mark.parametrize("victim", ["holder", "waiter"])
def test_kill_one_of_two_solves_and_the_stored_record_is_the_printed_one(
    scripted, redis_url, tmp_path, victim
):
    responder = Held(answer_first=2, late=TOO_LATE)
    server = scripted(responder)
    args = command(server, redis_url, "kill", "--wait", "--lease-ttl", "2")
    logs = [tmp_path / f"stderr-{i}.txt" for i in range(2)]
    procs = []
    for log in logs:
        with log.open("w") as stderr:
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True))
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: len(server.requests) == 4)  # the holder's: 2 answered, 2 held
        wait_for(lambda: _finished(client, "kill") == 2)  # the two answers are in Redis
        holder_pid = int(client.get(lease_key("kill")).split(b"@")[0])
        holder = next(p for p in procs if p.pid == holder_pid)
        waiter = procs[1 - procs.index(holder)]
        waiter_log = logs[procs.index(waiter)]
        wait_for(lambda: f"thread kill: busy (pid {holder.pid} on " in waiter_log.read_text())
        killed = holder if victim == "holder" else waiter
        killed.kill()
        killed.wait(timeout=10)
    finally:
        responder.holding = False
        responder.release.set()
    survivor = waiter if victim == "holder" else holder
    out, _ = survivor.communicate(timeout=120)
    log = logs[procs.index(survivor)].read_text()
    assert survivor.returncode == 0, log
    printed = json.loads(out)
    if victim == "holder":
        # The killed run's lease lapsed; the waiter resumed without asking anything finished.
        assert "thread kill: resuming round 1/2: 2 of 4 trajectories already saved" in log
        assert asked(server, 4) == (2, 1)
        contents = [t["content"] for t in printed["trajectories"] if t["round"] == 1]
        assert {"candidate 0: 391", "candidate 1: 391"} <= set(contents)

    again = solve(command(server, redis_url, "kill"))
    assert again.returncode == 0, again.stderr
    assert "thread kill: already answered" in again.stderr
    assert json.loads(again.stdout) == printed
    client.close()


def test_a_run_paused_past_its_lease_is_fenced_and_stops(scripted, redis_url):
    responder = Held(answer_first=2, late=TOO_LATE)
    server = scripted(responder)
    args = command(server, redis_url, "paused", "--lease-ttl", "2")
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: len(server.requests) == 4)
        wait_for(lambda: _finished(client, "paused") == 2)
        os.kill(first.pid, signal.SIGSTOP)  # a stall: GC pause, swapped out, a frozen VM
        wait_for(lambda: not client.exists(lease_key("paused")))  # its lease lapses
        responder.holding = False  # new calls are answered; the paused run's stay held
        second = solve(args)
        assert second.returncode == 0, second.stderr
        assert "thread paused: resuming" in second.stderr
        before = stored(client, "paused")
    finally:
        os.kill(first.pid, signal.SIGCONT)
        responder.release.set()  # the paused run's calls now come back (503: it retries)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "pacore: error: thread paused: this run lost its lease (it stalled past the lease's "
        "TTL, or another run took the thread over) and stopped; none of its writes landed since"
    )
    assert stored(client, "paused") == before  # nothing of the paused run landed
    again = solve(args)
    assert "thread paused: already answered" in again.stderr
    assert json.loads(again.stdout) == json.loads(second.stdout)
    client.close()


def test_web_app_answers_409_while_another_request_runs_the_thread(scripted, redis_url):
    gate = Held()
    server = scripted(gate)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = start_app(env_for(server, REDIS_URL=redis_url), port)
    request = {"problem": "17*23?", "thread_id": "w", "rounds": "2"}
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{base}/solve", json=request, timeout=60)
            wait_for(lambda: len(server.requests) == 2)  # the first request's calls are held
            r = httpx.post(f"{base}/solve", json=request, timeout=30)
            assert r.status_code == 409, r.text
            assert r.json()["detail"].startswith("thread w is busy: another run holds it (pid ")
            gate.release.set()
            assert first.result().status_code == 200
        assert len(server.requests) == 3  # the busy request asked nothing
    finally:
        gate.release.set()
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)
