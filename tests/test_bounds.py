"""Bounded inputs: K and a run's total have bounds, a signal acts within a second while a round
is built, a ``--messages`` file is size-checked before it is read, an oversized problem and
impossible settings fail before any call, and ``extra_body`` cannot replace what PaCoRe
sends."""

import asyncio
import json
import os
import signal
import subprocess
import threading

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from pacore_graph import (
    InvalidInputError,
    InvalidRoundsError,
    InvalidSettingsError,
    create_pacore_graph,
    resolve_rounds,
)
from pacore_graph.context import DEFAULTS, PaCoReContext
from pacore_graph.resume import run_settings, settings_key
from pacore_graph.testing import Reply
from tests.conftest import model_for, pacore_in_process, solve_command, wait_for

PROBLEM = "What is 17 * 23?"

# The machine's endpoint settings would change what the commands run against.
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("PACORE_BASE_URL", "OPENAI_BASE_URL", "PACORE_MODEL", "PACORE_MAX_MESSAGES_BYTES")
}


def fake_model() -> FakeListChatModel:
    return FakeListChatModel(responses=["<think>t</think>\\boxed{391}"])


def invoke(model, context=None, problem=PROBLEM, **defaults):
    graph = create_pacore_graph(model, rounds=defaults.pop("rounds", 2), **defaults).compile()
    return asyncio.run(graph.ainvoke({"messages": [("user", problem)]}, context=context))


def pacore(*args, env=None, input=None):
    """``pacore ARGS``, in-process: these are argument and input errors (and one run)."""
    return pacore_in_process(*args, env=CLEAN_ENV if env is None else env, input=input)


def error_line(result) -> str:
    """The one line a failed command printed (it exits 2: the command can be fixed)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("backend: ")]
    assert len(lines) == 1 and lines[0].startswith("pacore: error: "), result.stderr
    return lines[0]


# -- K and the run's total ------------------------------------------------------------------


def test_the_bounds_have_documented_defaults_well_above_the_papers_largest_run():
    assert (DEFAULTS.max_k, DEFAULTS.max_trajectories) == (1024, 4096)
    assert DEFAULTS.max_input_chars == 1_000_000
    high = resolve_rounds("high")
    assert max(high) * 32 == DEFAULTS.max_k and sum(high) < DEFAULTS.max_trajectories


@pytest.mark.parametrize(
    ("spec", "bounds", "fragments"),
    [
        (999999, {}, ["round 1 of [999999, 1] has K = 999999", "max_k = 1024", "--max-k"]),
        ("32,2000", {}, ["round 2 of [32, 2000, 1] has K = 2000", "max_k = 1024"]),
        (
            "1000,1000,1000,1000,1000",
            {},
            ["run 5001 trajectories", "max_trajectories = 4096", "--max-trajectories"],
        ),
        ([1] * 5000, {}, ["[1, 1, 1, 1, 1, 1, ...] run 5000", "max_trajectories = 4096"]),
        ("9" * 5000, {}, ["more than 4300 digits"]),
        ([9], {"max_k": 8}, ["K = 9, above max_k = 8"]),
        ([4, 4], {"max_trajectories": 8}, ["run 9 trajectories, above max_trajectories = 8"]),
    ],
)
def test_a_vector_over_a_bound_names_the_bound_and_how_to_raise_it(spec, bounds, fragments):
    kwargs = {"max_k": 1024, "max_trajectories": 4096, **bounds}
    with pytest.raises(InvalidRoundsError) as error:
        resolve_rounds(spec, **kwargs)
    text = str(error.value)
    assert "\n" not in text and len(text) < 300
    for fragment in fragments:
        assert fragment in text, text


def test_a_vector_at_the_bounds_is_allowed():
    assert resolve_rounds([1024, 1024, 1024, 1023], max_k=1024, max_trajectories=4096)
    assert resolve_rounds(5000) == [5000, 1]  # no bounds given: only the shape is checked


def test_the_graph_refuses_a_vector_over_the_bounds_at_build_time_and_per_run(scripted):
    server = scripted()
    with pytest.raises(InvalidRoundsError, match="max_k = 1024"):
        create_pacore_graph(model_for(server), rounds=999999)
    with pytest.raises(InvalidRoundsError, match="max_trajectories = 4096"):
        create_pacore_graph(model_for(server), rounds="1000,1000,1000,1000,1000")
    graph = create_pacore_graph(model_for(server), rounds=2).compile()
    with pytest.raises(InvalidRoundsError, match="max_k = 1024"):
        graph.invoke({"messages": [("user", PROBLEM)]}, context={"rounds": 1025})
    with pytest.raises(InvalidRoundsError, match="K = 3, above max_k = 2"):
        graph.invoke({"messages": [("user", PROBLEM)]}, context={"rounds": 3, "max_k": 2})
    assert server.requests == []


def test_raising_a_bound_allows_the_run_and_is_not_another_run():
    out = invoke(fake_model(), context={"rounds": [3], "max_k": 3, "max_trajectories": 4})
    assert out["pacore"]["round_vector"] == [3, 1]
    out = invoke(fake_model(), rounds=[3], max_k=3)  # as a graph default
    assert out["pacore"]["round_vector"] == [3, 1]
    # A raised bound changes no result: same settings, same digest, so a resume matches.
    raised = PaCoReContext(**{**vars(DEFAULTS), "max_k": 5000, "max_input_chars": 10**7})
    assert settings_key(run_settings(raised)) == settings_key(run_settings(DEFAULTS))


def test_solve_refuses_a_huge_k_at_once_with_one_line(scripted):
    server = scripted()
    result = pacore("solve", PROBLEM, "--base-url", server.base_url, "--rounds", "999999")
    line = error_line(result)
    assert "K = 999999, above max_k = 1024: raise the max_k setting (--max-k)" in line
    line = error_line(
        pacore("solve", PROBLEM, "--base-url", server.base_url, "--rounds", "8", "--max-k", "4")
    )
    assert "K = 8, above max_k = 4" in line
    assert server.requests == []


def test_eval_checks_every_setting_against_the_bounds_before_any_call(scripted):
    pytest.importorskip("math_verify")
    server = scripted()
    sample = "pacore_graph/eval/data/sample.jsonl"
    base = ("eval", sample, "--base-url", server.base_url, "--no-plot")
    assert "K = 2000, above max_k = 1024" in error_line(pacore(*base, "--rounds", "2000"))
    line = error_line(pacore(*base, "--baseline", "sc@5000", "--max-k", "4096"))
    assert "K = 5000, above max_k = 4096" in line
    assert "top_p must be" in error_line(pacore(*base, "--top-p", "0"))
    assert server.requests == []


# -- signals while a round is being built ------------------------------------------------------


def held(body):
    return Reply(content="too late", delay=120)


def interruption_line(sig):
    name = signal.Signals(sig).name
    return (
        f"pacore: interrupted ({name}); nothing was saved: add --redis-url to make runs resumable"
    )


def stop(proc, sig) -> None:
    """Sends ``sig`` and waits until the process has exited (how fast is a benchmark's)."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_a_wide_round_is_built_ends_the_run(scripted, sig, status):
    # Bounds raised on purpose: 8192 trajectories take LangGraph seconds to build and more
    # to cancel, during which the event loop runs no signal handler of its own.
    server = scripted(held)
    argv = solve_command(
        server, PROBLEM, "--rounds", "8192", "--max-k", "8192", "--max-trajectories", "8193"
    )
    proc = subprocess.Popen(
        [*argv, "--progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("round 1"):  # prepare is done: the fan-out is being built
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(timeout=60), lines
    stop(proc, sig)
    reader.join(timeout=10)
    assert proc.returncode == status
    assert lines[-1] == interruption_line(sig), lines
    assert not any("Traceback" in line or "Warning" in line for line in lines), lines


def test_sigterm_with_every_trajectory_of_a_round_at_max_k_ends_the_run(scripted):
    server = scripted(held)
    k = str(DEFAULTS.max_k)
    proc = subprocess.Popen(
        solve_command(server, PROBLEM, "--rounds", k),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: server.requests or proc.poll() is not None)  # the first call
    assert server.requests, proc.stderr.read() if proc.poll() is not None else "no call"
    stop(proc, signal.SIGTERM)
    assert proc.returncode == 143
    lines = proc.stderr.read().splitlines()
    # The backend line, then only the interruption: no warnings of the cancelled round.
    assert lines[1:] == [interruption_line(signal.SIGTERM)], lines


# -- the size of the input ---------------------------------------------------------------------


def chat_file(tmp_path, text=PROBLEM):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([{"role": "user", "content": text}]))
    return path


def test_a_huge_messages_file_is_refused_before_it_is_read(scripted, tmp_path):
    server = scripted()
    path = tmp_path / "huge.json"
    with open(path, "wb") as file:
        file.truncate(2**30)  # 1 GiB, sparse: nothing is written to disk
    result = pacore("solve", "--messages", str(path), "--base-url", server.base_url)
    line = error_line(result)
    assert f"messages file {path} is 1,073,741,824 bytes" in line, line
    assert "above the limit of 33,554,432 bytes" in line
    assert "--max-messages-bytes or $PACORE_MAX_MESSAGES_BYTES" in line
    assert server.requests == []


def test_the_messages_limit_comes_from_the_option_or_the_environment(scripted, tmp_path):
    server = scripted(lambda body: "<think>t</think>\\boxed{391}")
    path = chat_file(tmp_path)
    size = path.stat().st_size
    base = ("solve", "--messages", str(path), "--base-url", server.base_url, "--rounds", "1")
    line = error_line(pacore(*base, "--max-messages-bytes", str(size - 1)))
    assert f"is {size} bytes, above the limit of {size - 1} bytes" in line
    env = {**CLEAN_ENV, "PACORE_MAX_MESSAGES_BYTES": str(size - 1)}
    assert "above the limit" in error_line(pacore(*base, env=env))
    line = error_line(pacore(*base, env={**CLEAN_ENV, "PACORE_MAX_MESSAGES_BYTES": "lots"}))
    assert "$PACORE_MAX_MESSAGES_BYTES: not a size in bytes such as 32M: 'lots'" in line
    assert server.requests == []
    ok = pacore(*base, "--max-messages-bytes", "1K", env=env)  # the option wins
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "\\boxed{391}"


def test_messages_on_stdin_are_read_no_further_than_the_limit(scripted):
    server = scripted()
    chat = json.dumps([{"role": "user", "content": "x" * 500}])
    result = pacore(
        "solve",
        "--messages",
        "-",
        "--base-url",
        server.base_url,
        "--max-messages-bytes",
        "100",
        input=chat,
    )
    assert "messages from stdin are larger, above the limit of 100 bytes" in error_line(result)
    assert server.requests == []


def test_an_oversized_problem_fails_before_any_call(scripted, tmp_path):
    server = scripted()
    huge = "x" * (DEFAULTS.max_input_chars + 1)
    with pytest.raises(InvalidInputError, match="1,000,001 characters of text, above max_in"):
        invoke(model_for(server), problem=huge)
    with pytest.raises(InvalidInputError, match="raise the max_input_chars setting"):
        invoke(model_for(server), context={"max_input_chars": 10})
    result = pacore(
        "solve", "--messages", str(chat_file(tmp_path, huge)), "--base-url", server.base_url
    )
    assert "above max_input_chars = 1,000,000" in error_line(result)
    result = pacore("solve", PROBLEM, "--base-url", server.base_url, "--max-input-chars", "5")
    assert "above max_input_chars = 5" in error_line(result)
    assert server.requests == []


def test_the_input_bound_counts_every_message_of_the_chat():
    chat = [("system", "s" * 6), ("user", "u" * 5)]
    graph = create_pacore_graph(fake_model(), rounds=1).compile()
    with pytest.raises(InvalidInputError, match="11 characters"):
        graph.invoke({"messages": chat}, context={"max_input_chars": 10})
    assert graph.invoke({"messages": chat}, context={"max_input_chars": 11})["messages"]


# -- impossible settings -----------------------------------------------------------------------

IMPOSSIBLE = [
    ("temperature", -1),
    ("temperature", -5),
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("temperature", "0.5"),
    ("temperature", True),
    ("top_p", 0),
    ("top_p", 1.5),
    ("top_p", -0.1),
    ("max_tokens", -1),
    ("max_tokens", 0),
    ("max_tokens", 2.5),
    ("seed", -1),
    ("seed", 1.5),
    ("context_limit", 0),
    ("context_limit", -3),
    ("max_k", 0),
    ("max_trajectories", -1),
    ("max_input_chars", 0),
    ("compaction", "bogus"),
    ("empty_references", "nothing"),
    ("on_context_overflow", "ignore"),
    ("drop_truncated", "yes"),
    ("extra_body", "top_k=20"),
]
RESERVED = ["messages", "model", "n", "stream", "stream_options", "temperature", "top_p"]


@pytest.mark.parametrize(("name", "value"), IMPOSSIBLE)
def test_an_impossible_setting_fails_before_any_call_naming_it(scripted, name, value):
    server = scripted()
    with pytest.raises(InvalidSettingsError) as error:
        invoke(model_for(server), context={name: value})
    text = str(error.value)
    assert text.startswith(name) and "\n" not in text, text
    assert server.requests == []
    with pytest.raises(InvalidSettingsError):  # as a graph default: at build time
        create_pacore_graph(model_for(server), **{name: value})


@pytest.mark.parametrize("key", RESERVED)
def test_extra_body_cannot_replace_what_pacore_sends(scripted, key):
    server = scripted()
    with pytest.raises(InvalidSettingsError, match=f"extra_body cannot set '{key}': "):
        invoke(model_for(server), context={"extra_body": {key: 1, "top_k": 20}})
    assert server.requests == []


def test_the_edges_of_the_allowed_values_run_and_are_sent(scripted):
    server = scripted(lambda body: "<think>t</think>\\boxed{391}")
    context = {
        "temperature": 0,
        "top_p": 1,
        "max_tokens": 1,
        "seed": 0,
        "context_limit": 1_000_000,
        "extra_body": {"top_k": 20, "seed": 7, "chat_template_kwargs": {"x": True}},
    }
    out = invoke(model_for(server), context=context, rounds=1)
    assert out["messages"][-1].content == "\\boxed{391}"
    first = server.requests[0]
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0, 1, 1)
    assert (first["top_k"], first["seed"]) == (20, 7)
    assert first["messages"][-1]["content"] == PROBLEM


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--concurrency", "-1"], "argument --concurrency: must be an integer >= 1, got '-1'"),
        (["--concurrency", "0"], "argument --concurrency: must be an integer >= 1, got '0'"),
        (["--temperature", "-1"], "temperature must be a number >= 0, got -1.0"),
        (["--temperature", "nan"], "temperature must be a number >= 0, got nan"),
        (["--top-p", "1.5"], "top_p must be a number in (0, 1], got 1.5"),
        (["--max-tokens", "-1"], "max_tokens must be an integer >= 1, got -1"),
        (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
        (["--context-limit", "0"], "context_limit must be an integer >= 1, got 0"),
        (["--max-trajectories", "0"], "max_trajectories must be an integer >= 1, got 0"),
        (["--extra-body", '{"messages": []}'], "extra_body cannot set 'messages'"),
        (["--extra-body", '{"n": 4}'], "extra_body cannot set 'n'"),
        (["--max-messages-bytes", "-5"], "argument --max-messages-bytes: invalid"),
    ],
)
def test_solve_refuses_impossible_options_in_one_line_before_any_call(scripted, args, fragment):
    server = scripted()
    result = pacore("solve", PROBLEM, "--base-url", server.base_url, "--rounds", "1", *args)
    line = error_line(result)
    assert fragment in line, line
    assert server.requests == []
