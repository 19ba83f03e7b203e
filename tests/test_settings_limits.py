"""Non-finite and out-of-range values: every setting and option is refused before any call,
in one line naming it, in the same words in the graph, the CLI and the server."""

import json

import pytest

from pacore_graph import InvalidSettingsError, create_pacore_graph
from pacore_graph.cli import main
from pacore_graph.context import DEFAULTS
from pacore_graph.server import ServeSettings
from pacore_graph.server.errors import ApiError, api_error
from pacore_graph.server.requests import parse_request
from tests.conftest import model_for

PROBLEM = "What is 17 * 23?"


@pytest.fixture(autouse=True)
def no_endpoint_settings(monkeypatch):
    for name in ("PACORE_BASE_URL", "OPENAI_BASE_URL", "PACORE_MODEL"):
        monkeypatch.delenv(name, raising=False)


def request(**fields) -> bytes:
    body = {"model": "pacore-1", "messages": [{"role": "user", "content": PROBLEM}], **fields}
    return json.dumps(body).encode()


def server_error(body: bytes) -> ApiError:
    with pytest.raises(Exception) as raised:
        parse_request(body, DEFAULTS, max_trajectories=64, max_n=4)
    return api_error(raised.value)


def cli_error(capsys, *argv: str) -> str:
    """The one line ``pacore`` printed for a command it refused (exit status 2)."""
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse's refusal
        status = exc.code
    assert status == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pacore: error: "), lines
    return lines[0].removeprefix("pacore: error: ")


SAME_WORDS = [
    ("max_seconds", float("inf"), "--max-seconds", "inf", "max_seconds must be a number > 0"),
    ("max_seconds", float("nan"), "--max-seconds", "nan", "max_seconds must be a number > 0"),
    ("straggler_factor", float("inf"), "--straggler-factor", "inf", "straggler_factor must be"),
    ("straggler_min_seconds", float("nan"), "--straggler-min-seconds", "nan", "straggler_min"),
    ("min_success", float("nan"), "--min-success", "nan", "min_success must be"),
    ("seed", 2**64, "--seed", str(2**64), "seed must be an integer >= 0 and below 2**63"),
    ("max_ttc_tokens", 10**30, "--max-ttc-tokens", str(10**30), "max_ttc_tokens must be"),
]


@pytest.mark.parametrize(("name", "value", "option", "text", "words"), SAME_WORDS)
def test_graph_cli_and_server_refuse_a_value_in_the_same_line(
    scripted, capsys, name, value, option, text, words
):
    server = scripted()
    with pytest.raises(InvalidSettingsError) as graph_error:
        create_pacore_graph(model_for(server), **{name: value})
    graph_line = str(graph_error.value)
    assert graph_line.startswith(words) and "\n" not in graph_line, graph_line
    cli_line = cli_error(capsys, "solve", PROBLEM, "--base-url", server.base_url, option, text)
    assert cli_line == graph_line
    # JSON has no NaN or Infinity, but Python's json (and many clients) write them.
    error = server_error(request(pacore={name: value}))
    assert (error.status, error.code, error.message) == (400, "invalid_pacore_settings", graph_line)
    assert server.requests == []


def test_an_infinite_budget_is_refused_per_run_too(scripted):
    server = scripted()
    graph = create_pacore_graph(model_for(server), rounds=1).compile()
    with pytest.raises(InvalidSettingsError, match=r"^max_seconds must be a number > 0, got inf"):
        graph.invoke({"messages": [("user", PROBLEM)]}, context={"max_seconds": float("inf")})
    assert server.requests == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"max_tokens": 100000000000000000000000000}', "max_tokens must be an integer >= 1"),
        (b'{"max_tokens": 1e30}', "max_tokens"),
        (b'{"pacore": {"max_seconds": Infinity}}', "max_seconds must be a number > 0, got inf"),
        (b'{"pacore": {"context_limit": 1e30}}', "context_limit must be an integer >= 1"),
        (b'{"pacore": {"straggler_quantile": NaN}}', "straggler_quantile must be a number in"),
    ],
)
def test_the_server_refuses_out_of_range_numbers_before_the_run(body, words):
    fields = json.loads(body)
    error = server_error(request(**fields))
    assert error.status == 400 and words in error.message, error.message
    assert "\n" not in error.message


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--timeout", "nan"], "argument --timeout: must be a number > 0, got 'nan'"),
        (["--timeout", "0"], "argument --timeout: must be a number > 0, got '0'"),
        (["--timeout", "-1"], "argument --timeout: must be a number > 0, got '-1'"),
        (["--lease-ttl", "nan"], "argument --lease-ttl: must be a number > 0, got 'nan'"),
        (["--lease-ttl", "inf"], "argument --lease-ttl: must be a number > 0, got 'inf'"),
        (["--concurrency", "nan"], "argument --concurrency: must be an integer >= 1, got 'nan'"),
    ],
)
@pytest.mark.parametrize("command", ["solve", "eval"])
def test_cli_options_are_refused_in_one_line_naming_them(scripted, capsys, command, argv, line):
    server = scripted()
    first = PROBLEM if command == "solve" else "pacore_graph/eval/data/sample.jsonl"
    text = cli_error(capsys, command, first, "--base-url", server.base_url, *argv)
    assert text.startswith(line), text
    assert server.requests == []


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({"keepalive_s": float("nan")}, "keepalive_s must be a number > 0, got nan"),
        ({"thread_ttl_s": float("inf")}, "thread_ttl_s must be a number > 0, got inf"),
        ({"grace_s": -1.0}, "grace_s must be a number >= 0, got -1.0"),
        ({"max_runs": 0}, "max_runs must be an integer >= 1, got 0"),
        ({"port": 70000}, "port must be an integer in [0, 65535], got 70000"),
    ],
)
def test_server_settings_are_refused_in_one_line_naming_them(settings, line):
    with pytest.raises(InvalidSettingsError) as error:
        ServeSettings(**settings)
    assert str(error.value) == line
