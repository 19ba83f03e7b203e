"""SIGTERM and Ctrl-C: calls in flight are cancelled, finished work stays, the CLI says how to
resume, and the rerun asks only what had not finished."""

import signal
import subprocess

import pytest

from pacore_graph.testing import Reply, last_user_text
from tests.conftest import Held, run_in_process, saved_trajectories, solve_command, wait_for

PROBLEM = "What is 17 * 23?"


def held():
    """Answers the first two exploration calls; holds the others (until the client hangs up)."""
    return Held(2, held_reply=Reply(content="too late", delay=120))


def command(server, *extra):
    return solve_command(server, PROBLEM, "--rounds", "4", *extra)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_cancels_calls_keeps_finished_work_and_rerun_resumes(
    scripted, redis_url, sig, status
):
    responder = held()
    server = scripted(responder)
    args = command(server, "--redis-url", redis_url, "--thread-id", f"sig-{sig}")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(server.requests) == 4)  # 2 answered, 2 held
    wait_for(lambda: saved_trajectories(redis_url, f"sig-{sig}") == 2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)  # the held calls would take 120 s
    assert proc.returncode == status
    assert "Traceback" not in stderr
    name = signal.Signals(sig).name
    assert stderr.strip().splitlines()[-1] == (
        f"pacore: interrupted ({name}); finished trajectories are saved in thread sig-{sig}: "
        "run the same command again to resume"
    )
    wait_for(lambda: server.cancelled == 2)  # the server saw both held calls dropped

    responder.holding = False
    before = len(server.requests)
    rerun = run_in_process(args)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "\\boxed{391}"
    new = [last_user_text(b) for b in server.requests[before:]]
    assert sum("Reference 1:" not in t for t in new) == 2  # only the two cancelled ones
    assert "candidate 0: 391" in new[-1] and "candidate 1: 391" in new[-1]


def test_sigterm_without_redis_says_nothing_was_saved(scripted):
    server = scripted(held())
    proc = subprocess.Popen(
        command(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: len(server.requests) == 4)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143
    assert stderr.strip().splitlines()[-1] == (
        "pacore: interrupted (SIGTERM); nothing was saved: add --redis-url to make runs resumable"
    )
