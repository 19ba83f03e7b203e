"""``pacore solve`` as a user runs it, against a scripted server: in-process
(`pacore_in_process`) but for what only a process of its own shows (its GC freeze)."""

import json
import os
import subprocess
import sys

import pytest

from pacore_graph.cli import main
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import on_one_core, pacore_in_process

# The machine's endpoint settings would change what "no --base-url" means.
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("PACORE_BASE_URL", "OPENAI_BASE_URL", "PACORE_MODEL")
}


def in_process(*args, env=None, input=None):
    """``pacore ARGS`` run in-process, with ``env`` (default `CLEAN_ENV`) as its environment."""
    return pacore_in_process(*args, env=CLEAN_ENV if env is None else env, input=input)


def answer_or_reference(body):
    if "Reference 1:" in last_user_text(body):
        return Reply(content="<think>compare</think>It is \\boxed{391}.")
    return Reply(content="I think 391", reasoning_content="17*20+17*3")


def test_solve_prints_the_answer_without_thinking(scripted):
    server = scripted(answer_or_reference, model="pacore-8b")
    result = in_process("solve", "--base-url", server.base_url, "--rounds", "3", "What is 17*23?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "It is \\boxed{391}."
    assert len(server.requests) == 4
    assert {b["model"] for b in server.requests} == {"pacore-8b"}  # found via /v1/models


def test_solve_json_prints_the_full_record(scripted, tmp_path):
    server = scripted(answer_or_reference)
    chat = tmp_path / "chat.json"
    chat.write_text(
        json.dumps(
            [
                {"role": "system", "content": "Be exact."},
                {"role": "user", "content": "What is 17*23?"},
            ]
        )
    )
    result = in_process(
        "solve",
        "--messages",
        str(chat),
        "--base-url",
        server.base_url,
        "--model",
        "m",
        "--rounds",
        "2",
        "--temperature",
        "0.7",
        "--top-p",
        "0.95",
        "--max-tokens",
        "99",
        "--seed",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["answer"] == "It is \\boxed{391}."
    assert record["round_vector"] == [2, 1]
    assert [len(r) for r in record["round_responses"]] == [2, 1]
    assert record["round_responses"][0][0]["reasoning_content"] == "17*20+17*3"
    assert record["ttc_tokens"] == sum(t["completion_tokens"] for t in record["trajectories"])
    first = server.requests[0]
    assert first["messages"][0] == {"role": "system", "content": "Be exact."}
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.7, 0.95, 99)


def test_api_key_comes_from_the_environment(scripted):
    server = scripted(answer_or_reference)
    env = {"OPENAI_API_KEY": "sk-from-env", "PATH": "/usr/bin:/bin"}
    result = in_process("solve", "--base-url", server.base_url, "--rounds", "1", "2+2?", env=env)
    assert result.returncode == 0, result.stderr
    assert set(server.authorizations) == {"Bearer sk-from-env"}


def test_errors_are_one_line_without_traceback(scripted):
    cases = [
        (["solve", "--base-url", "http://127.0.0.1:9/v1", "2+2?"], "cannot reach"),
        (["solve", "--rounds", "4,0", "2+2?"], "K >= 1"),
        (["solve", "--rounds", "extreme", "2+2?"], "unknown rounds"),
        (["solve", "--base-url", "http://127.0.0.1:9/v1"], "no problem given"),
        (["solve", "--messages", "/nonexistent.json"], "cannot read messages file"),
        (["solve", "--base-url", "http://127.0.0.1:9/v1", ""], "empty"),
    ]
    server = scripted(answer_or_reference)
    cases.append((["solve", "--base-url", server.base_url, "   "], "empty"))
    for args, fragment in cases:
        result = in_process(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, result.stderr)
    assert server.requests == []


def test_without_base_url_runs_on_the_embedded_cpu_model():
    with on_one_core():  # the embedded server it starts runs one llama.cpp thread
        result = in_process(
            "solve", "--rounds", "2", "--max-tokens", "12", "--json", "What is 2+2?"
        )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert [len(r) for r in record["round_responses"]] == [2, 1]
    assert all(t["completion_tokens"] > 0 for t in record["trajectories"])
    assert record["ttc_tokens"] == sum(t["completion_tokens"] for t in record["trajectories"])
    assert all(t["finish_reason"] in ("stop", "length") for t in record["trajectories"])


def test_messages_from_stdin_as_a_list_or_an_object(scripted):
    server = scripted(answer_or_reference)
    chat = [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "What is 17*23?"},
    ]
    for text in (json.dumps(chat), json.dumps({"messages": chat})):
        result = in_process(
            "solve", "--messages", "-", "--base-url", server.base_url, "--rounds", "1", input=text
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "It is \\boxed{391}."
        assert server.requests[-2]["messages"] == chat  # round 1 got the chat as it was


def test_a_problem_and_messages_together_are_a_one_line_error(scripted, tmp_path):
    server = scripted(answer_or_reference)
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "2+2?"}]}))
    cases = [
        (["--messages", str(chat), "3+3?"], "PROBLEM and --messages both give the problem"),
        (["--messages", "-", "--demo"], "--messages and --demo both give the problem"),
        (["--messages", "-"], "cannot read messages from stdin"),
    ]
    for args, fragment in cases:
        result = in_process("solve", "--base-url", server.base_url, *args, input="not json")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pacore: error: "), result.stderr
        assert fragment in lines[0], lines[0]
    assert server.requests == []


def test_rounds_help_says_the_papers_notation_runs_as_written(capsys):
    for command in ("solve", "eval"):
        with pytest.raises(SystemExit) as exit:
            main([command, "--help"])
        assert exit.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "32,4 runs [32, 4, 1]" in text, command
        assert "such as 32,4,1 as the paper writes it, runs as written" in text, command


def test_a_tool_message_without_its_call_id_is_a_one_line_error(scripted):
    server = scripted(answer_or_reference)
    chat = [{"role": "user", "content": "2+2?"}, {"role": "tool", "content": "4"}]
    result = in_process(
        "solve", "--base-url", server.base_url, "--messages", "-", input=json.dumps(chat)
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tool_call_id" in lines[0] and "unexpected" not in lines[0], lines
    assert server.requests == []


def test_solve_freezes_its_imports_out_of_the_garbage_collectors_reach(scripted):
    server = scripted(answer_or_reference)
    code = (
        "import gc, sys; from pacore_graph.cli import main; "
        f"rc = main(['solve', '--base-url', {server.base_url!r}, '--rounds', '1', 'q']); "
        "print('frozen', gc.get_freeze_count(), *gc.get_threshold(), file=sys.stderr); "
        "sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=CLEAN_ENV
    )
    assert result.returncode == 0, result.stderr
    frozen, *threshold = map(int, result.stderr.split("frozen ")[1].split()[:4])
    assert frozen > 100_000  # LangChain's, pydantic's, openai's and LangGraph's objects
    assert threshold == [100_000, 50, 100]  # full collections made rare
