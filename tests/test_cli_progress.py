"""``pacore solve``'s stderr: the backend it runs on, a live bar per round on a terminal,
plain lines elsewhere, retries, and what a resume found saved."""

import os
import re
import threading

from pacore_graph.cli.options import public_url
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import pacore_in_process, pacore_on_a_terminal

ENV_VARIABLES = ("PACORE_BASE_URL", "OPENAI_BASE_URL", "PACORE_MODEL")


def clean_env(**extra):
    """The test's environment without any endpoint settings of the machine, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARIABLES}
    return {**env, **extra}


def solve(*args, env=None, input=None):
    """``pacore solve ARGS`` in-process: what it prints on a pipe, and its exit status."""
    return pacore_in_process("solve", *args, env=env or clean_env(), input=input)


def synthesis(body):
    return "Reference 1:" in last_user_text(body)


class Flaky:
    """Round 1: the first call answers 500 (retried), the second 400 (failed for good);
    every other call answers with 7 completion tokens."""

    def __init__(self):
        self.exploration = 0
        self.lock = threading.Lock()

    def __call__(self, body):
        if synthesis(body):
            return Reply(content="\\boxed{391}", completion_tokens=5)
        with self.lock:
            self.exploration += 1
            n = self.exploration
        if n == 1:
            return Reply(status=500, error="overloaded")
        if n == 2:
            return Reply(status=400, error="bad request")
        return Reply(content="391", completion_tokens=7)


def test_endpoint_and_model_come_from_the_environment(scripted):
    server = scripted(lambda body: Reply(content="\\boxed{4}"), model="served")
    dead = "http://127.0.0.1:9/v1"

    result = solve("2+2?", "--rounds", "1", env=clean_env(PACORE_BASE_URL=server.base_url))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == f"backend: openai {server.base_url} model served"
    assert len(server.requests) == 2

    # PACORE_MODEL names the model; OPENAI_BASE_URL is the endpoint when PACORE_BASE_URL
    # is not set, and PACORE_BASE_URL wins over it.
    for env in (
        clean_env(OPENAI_BASE_URL=server.base_url, PACORE_MODEL="alias"),
        clean_env(PACORE_BASE_URL=server.base_url, OPENAI_BASE_URL=dead, PACORE_MODEL="alias"),
    ):
        result = solve("2+2?", "--rounds", "1", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[0] == f"backend: openai {server.base_url} model alias"
    assert {b["model"] for b in server.requests[2:]} == {"alias"}

    # Flags win over the environment.
    env = clean_env(PACORE_BASE_URL=dead, PACORE_MODEL="alias")
    result = solve("2+2?", "--rounds", "1", "--base-url", server.base_url, "--model", "m", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == f"backend: openai {server.base_url} model m"
    assert server.requests[-1]["model"] == "m"


def test_the_backend_line_never_shows_credentials(scripted):
    server = scripted(lambda body: Reply(content="\\boxed{4}"))
    password = "hunter2-s3cret-passw0rd"
    url = server.base_url.replace("http://", f"http://alice:{password}@")
    result = solve("2+2?", "--rounds", "1", env=clean_env(OPENAI_BASE_URL=url))
    # Whether the calls then succeed is the backend's business; the line names the endpoint
    # without its user and password, and nothing shows the password.
    assert result.stderr.splitlines()[0] == f"backend: openai {server.base_url} model scripted"
    assert password not in result.stderr + result.stdout
    assert "alice" not in result.stderr


def test_public_url_keeps_only_scheme_host_port_and_path():
    assert public_url("https://u:p@host.example:8443/v1?key=k#x") == "https://host.example:8443/v1"
    assert public_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
    assert public_url("http://host/v1") == "http://host/v1"


def test_a_terminal_gets_a_live_bar_per_round(scripted):
    server = scripted(Flaky())
    argv = ("17*23?", "--base-url", server.base_url, "--rounds", "4,2", "--concurrency", "1")
    ran, terminal = pacore_on_a_terminal("solve", *argv, env=clean_env())
    assert ran.returncode == 0, terminal
    assert ran.stdout.strip() == "\\boxed{391}"
    lines = terminal.split("\r\n")
    assert lines[0] == f"backend: openai {server.base_url} model scripted"
    # One terminal line per round, redrawn in place (\r) as trajectories finish; a shorter
    # redraw is padded with spaces over the longer one.
    rounds = [line for line in lines[1:] if line]
    assert len(rounds) == 3, terminal
    redraws = [d.rstrip() for d in rounds[0].split("\r") if d.strip()]
    assert redraws[0].startswith("round 1/3 [--------------------] 0/4 | 0 tokens | ")
    assert re.fullmatch(
        r"round 1/3 \[#{20}\] 3/4 \| 21 tokens \| \d+\.\ds \| 1 retry \| 1 failed", redraws[-1]
    ), redraws
    assert any(" 1/4 | 7 tokens | " in d for d in redraws)
    last = rounds[1].split("\r")[-1].rstrip()
    assert re.fullmatch(
        r"round 2/3 \[#{20}\] 2/2 \| 10 tokens \| .* \| 0 retries \| 0 failed", last
    )
    assert "round 3/3 [####################] 1/1 | 5 tokens" in rounds[2]


def test_elsewhere_progress_is_one_plain_line_per_event(scripted):
    server = scripted(Flaky())
    argv = ("17*23?", "--base-url", server.base_url, "--rounds", "4", "--concurrency", "1")
    result = solve(*argv, "--progress")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"backend: openai {server.base_url} model scripted"
    assert lines[1] == "round 1: 4 trajectories"
    assert re.fullmatch(r"round 1 #\d retrying after HTTP 500: overloaded", lines[2]), lines
    assert re.fullmatch(r"round 1 #\d failed: HTTP 400: bad request", lines[3]), lines
    assert lines[4] == "round 1 done: 3 references, 21 tokens, 1 failed, 1 retry"
    assert lines[5:] == ["round 2: 1 trajectories", "round 2 done: 1 references, 5 tokens"]

    # Without --progress, a pipe gets the backend line only.
    quiet = solve(*argv)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.splitlines() == [f"backend: openai {server.base_url} model scripted"]


def test_a_resume_says_how_many_trajectories_were_saved(scripted, redis_url):
    broken = threading.Event()
    broken.set()
    calls = {"n": 0}
    lock = threading.Lock()

    def responder(body):
        # While broken, only round 1's first call answers: three of four fail for good
        # (400 is not retried), below the quorum of two, so the run stops with a checkpoint.
        with lock:
            calls["n"] += 1
            first = calls["n"] == 1
        if synthesis(body):
            return Reply(content="\\boxed{391}")
        if broken.is_set() and not first:
            return Reply(status=400, error="not now")
        return Reply(content="391")

    server = scripted(responder)
    argv = ("17*23?", "--base-url", server.base_url, "--rounds", "4", "--concurrency", "1")
    argv += ("--redis-url", redis_url, "--thread-id", "resume-1")
    first = solve(*argv)
    assert first.returncode == 1, first.stderr
    assert "thread resume-1: started" in first.stderr
    assert "1 of 4 trajectories finished, 2 needed" in first.stderr

    broken.clear()
    again = solve(*argv)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines()[1] == (
        "thread resume-1: resuming round 1/2: 1 of 4 trajectories already saved"
    )
    assert len(server.requests) == 4 + 3 + 1  # only the three failed calls were asked again
