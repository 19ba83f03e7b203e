"""``pacore solve`` on a Redis that loses or refuses data: each fault is one line that says
what was and was not saved, the answer is printed whenever it arrived, and a damaged thread
is never resumed."""

import subprocess

import pytest
import redis

from pacore_graph.testing import last_user_text
from tests.conftest import (
    FinalFailsOnce,
    Held,
    run_in_process,
    saved_trajectories,
    solve_command,
    wait_for,
)

PROBLEM = "What is 17 * 23?"


def pacore(server, redis_url, thread, *extra):
    return solve_command(
        server,
        PROBLEM,
        *("--rounds", "2", "--concurrency", "4", "--redis-url", redis_url),
        *("--thread-id", thread, *extra),
    )


def run(args):
    """A run that needs no process of its own (no signal, no kill): in-process."""
    return run_in_process(args)


def start(*args):
    """`pacore`'s run in a process of its own, for a Redis to fail under."""
    return subprocess.Popen(
        pacore(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def one_error_line(stderr):
    """The last stderr line, checked to be pacore's only error line."""
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("pacore: error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def test_solve_refuses_a_redis_that_may_evict_its_checkpoints(scripted, own_redis):
    server = scripted(FinalFailsOnce())
    # Large enough that nothing is evicted yet: the policy alone is refused.
    evicting = own_redis("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    refused = run(pacore(server, evicting.url, "ev"))
    assert refused.returncode == 2
    line = one_error_line(refused.stderr)
    assert line.startswith(f"pacore: error: Redis at redis://127.0.0.1:{evicting.port}/0: ")
    assert "maxmemory-policy is allkeys-lru" in line
    assert "CONFIG SET maxmemory-policy noeviction" in line and "--allow-eviction" in line
    assert server.requests == []  # refused before any model call

    allowed = run(pacore(server, evicting.url, "ev", "--allow-eviction"))
    assert allowed.returncode == 1, allowed.stderr  # it ran: the scripted final call fails


@pytest.mark.parametrize("lost", ["writes", "blobs", "meta"])
def test_a_damaged_thread_is_one_line_and_restart_starts_it_over(scripted, redis_url, lost):
    server = scripted(FinalFailsOnce())
    thread = f"damaged-{lost}"
    first = run(pacore(server, redis_url, thread))
    assert first.returncode == 1, first.stderr  # the final call failed: a QuorumError
    assert len(server.requests) == 3
    client = redis.Redis.from_url(redis_url)
    assert client.delete(f"pacore:{{{thread}}}:{lost}") == 1
    client.close()

    rerun = run(pacore(server, redis_url, thread))  # says so, and asks nothing
    assert rerun.returncode == 2 and rerun.stdout == ""
    line = one_error_line(rerun.stderr)
    assert line.startswith(f"pacore: error: thread {thread} is damaged: ")
    assert f"pacore:{{{thread}}}:{lost}" in line and "--restart" in line
    assert len(server.requests) == 3

    restart = run(pacore(server, redis_url, thread, "--restart"))
    assert restart.returncode == 0, restart.stderr
    assert restart.stdout.strip() == "\\boxed{391}"
    assert len(server.requests) == 6  # everything asked again
    assert f"thread {thread}: deleted (--restart)" in restart.stderr


def test_restart_needs_redis(scripted):
    server = scripted(FinalFailsOnce())
    result = run(solve_command(server, PROBLEM, "--restart"))
    assert result.returncode == 2
    assert one_error_line(result.stderr).endswith(
        "--restart starts a checkpointed thread over: it needs --redis-url"
    )


def test_a_wrong_redis_password_is_authentication_failed(scripted, own_redis):
    server = scripted(FinalFailsOnce())
    locked = own_redis("--requirepass", "the-right-password")
    url = f"redis://:hunter2@127.0.0.1:{locked.port}/0"
    result = run(pacore(server, url, "auth"))
    assert result.returncode == 2
    assert one_error_line(result.stderr) == (
        f"pacore: error: Redis at redis://127.0.0.1:{locked.port}/0: authentication failed "
        "(wrong password or user in the URL)"
    )
    assert "hunter2" not in result.stderr + result.stdout
    assert server.requests == []


def test_redis_out_of_memory_keeps_the_answer_and_a_rerun_resumes(scripted, own_redis):
    responder = Held(hold_final=True)
    server = scripted(responder)
    full = own_redis("--maxmemory-policy", "noeviction")
    client = redis.Redis.from_url(full.url)
    proc = start(server, full.url, "oom")
    try:
        assert responder.held.wait(60)  # round 1 and the final step are saved by now
        client.config_set("maxmemory", 1)  # Redis is full: it refuses every write
    finally:
        responder.release.set()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stdout.strip() == "\\boxed{391}"  # the answer that arrived is printed
    line = one_error_line(stderr)
    assert line.startswith(
        "pacore: error: the answer above could not be saved: "
        f"Redis at redis://127.0.0.1:{full.port}/0 is out of memory"
    )
    assert line.endswith("finished work is saved in thread oom: rerun the same command to resume")

    client.config_set("maxmemory", 0)
    client.close()
    before = len(server.requests)
    rerun = run(pacore(server, full.url, "oom"))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "\\boxed{391}"
    assert ["Reference 1:" in last_user_text(b) for b in server.requests[before:]] == [True]


def restart_empty(redis_server):
    """Redis restarts without persistence: everything it held is gone."""
    redis_server.stop(save=False)
    redis_server.start()


def test_redis_restarted_empty_during_the_final_call_still_prints_the_answer(
    scripted, redis_server, redis_url
):
    responder = Held(hold_final=True)
    server = scripted(responder)
    proc = start(server, redis_url, "final")
    try:
        assert responder.held.wait(60)
        restart_empty(redis_server)
    finally:
        responder.release.set()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stdout.strip() == "\\boxed{391}"
    line = one_error_line(stderr)
    assert line.startswith("pacore: error: the answer above could not be saved: ")
    assert "finished work is saved" not in line and "checkpointed" not in line
    assert "nothing of this run is saved" in line or "lost part of its data" in line

    before = len(server.requests)
    again = run(pacore(server, redis_url, "final", "--restart"))
    assert again.returncode == 0, again.stderr
    assert len(server.requests) == before + 3  # nothing survived: asked from the start


def lost_thread_line(thread):
    return (
        f"pacore: error: Redis lost thread {thread} while this run wrote it (it restarted "
        "without persistence, or was flushed): nothing of this run is saved; a rerun starts over"
    )


def test_redis_restarted_empty_mid_round_says_nothing_was_saved(scripted, redis_server, redis_url):
    # The next trajectory to finish finds its thread gone: its write is refused, and the run
    # stops (a long lease: no renewal runs meanwhile).
    responder = Held(answer_first=1)
    server = scripted(responder)
    proc = start(server, redis_url, "mid", "--lease-ttl", "600")
    try:
        assert responder.held.wait(60)
        wait_for(lambda: saved_trajectories(redis_url, "mid") == 1)  # one finished, one held
        restart_empty(redis_server)
    finally:
        responder.release.set()
    stdout, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stdout) == (1, "")
    assert one_error_line(stderr) == lost_thread_line("mid")


def test_redis_restarted_empty_mid_round_stops_the_run_at_the_next_renewal(
    scripted, redis_server, redis_url
):
    # Nothing finishes after the restart: the lease's renewal finds the thread gone with it,
    # and stops the run.
    responder = Held(answer_first=1)
    server = scripted(responder)
    proc = start(server, redis_url, "renewal", "--rounds", "8,2", "--lease-ttl", "1")
    try:
        assert responder.held.wait(60)  # mid-round: the round's checkpoint is saved
        restart_empty(redis_server)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        responder.release.set()
    assert (proc.returncode, stdout) == (1, "")
    assert one_error_line(stderr) == lost_thread_line("renewal")


def test_data_lost_while_the_run_goes_on_is_reported_with_the_answer(scripted, redis_url):
    # Redis empties (FLUSHALL, an eviction, a restart the client reconnected through) while
    # the final call runs: the answer is printed, and the line says it was not saved.
    responder = Held(hold_final=True)
    server = scripted(responder)
    proc = start(server, redis_url, "flushed")
    client = redis.Redis.from_url(redis_url)
    try:
        assert responder.held.wait(60)
        client.flushall()
    finally:
        responder.release.set()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stdout.strip() == "\\boxed{391}"
    line = one_error_line(stderr)
    # The flush took the run's lease too: its later writes are fenced off rather than
    # landing in an emptied thread, and the line says the thread is lost.
    assert line == lost_thread_line("flushed").replace(
        "error: ", "error: the answer above could not be saved: "
    )
    assert not client.exists("pacore:{flushed}:cp")
    client.close()
