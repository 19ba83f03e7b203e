"""SIGTERM and Ctrl-C: calls in flight are cancelled, finished work stays, the CLI says how to
resume, and the rerun asks only what had not finished; and state edits at a breakpoint are
honoured or refused."""

import signal
import subprocess

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import InvalidUpdateError

from pacore_graph import create_pacore_graph
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import (
    Held,
    model_for,
    run_in_process,
    saved_trajectories,
    solve_command,
    wait_for,
)

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


# Edits of the state at a breakpoint take effect and are recorded as sent, or are refused.

EDIT = "A person's reference: 17 * 23 = 391."


def breakpoint_at(server, node):
    """A [2] run paused before ``node`` (round 2's trajectories for "trajectory")."""
    graph = create_pacore_graph(model_for(server), rounds=[2]).compile(
        checkpointer=InMemorySaver(), interrupt_before=[node]
    )
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [("user", PROBLEM)]}, config)
    if node == "trajectory":  # the first pause is round 1's
        graph.invoke(None, config)
    assert graph.get_state(config).next == (node,)
    return graph, config


@pytest.mark.parametrize("node", ["synthesize", "trajectory"])
def test_an_edit_of_references_is_what_the_next_round_is_sent_and_recorded(scripted, node):
    server = scripted(lambda body: Reply(content="candidate: 391"))
    graph, config = breakpoint_at(server, node)
    graph.update_state(config, {"references": [EDIT]})
    out = graph.invoke(None, config)
    final = last_user_text(server.requests[-1])
    assert EDIT in final and "candidate" not in final
    (round_1, _) = out["pacore"]["rounds_done"]
    assert round_1["references"] == [EDIT] and round_1["review"] == "edited"


@pytest.mark.parametrize("key", ["rounds_done", "trajectories", "round", "pacore"])
def test_an_edit_of_a_key_pacore_derives_is_refused_naming_references(scripted, key):
    graph, config = breakpoint_at(scripted(lambda body: Reply(content="391")), "synthesize")
    with pytest.raises(InvalidUpdateError, match=rf"cannot edit {key}: .*edit 'references'"):
        graph.update_state(config, {key: []})


@pytest.mark.parametrize("node", ["compact", "answer"])
def test_an_edit_of_references_no_round_would_be_sent_is_refused(scripted, node):
    graph, config = breakpoint_at(scripted(lambda body: Reply(content="391")), node)
    with pytest.raises(InvalidUpdateError, match="cannot edit 'references' here"):
        graph.update_state(config, {"references": [EDIT]})
    graph.update_state(config, {"messages": []})  # the chat stays editable
