"""Property-based bad input (hypothesis): any round vector, any messages shape, unicode, huge
problems, missing fields. The outcome is a correct run or a one-line error naming the problem;
never a hang, never a traceback from the CLI, which refuses exactly what the library refuses,
in the same words."""

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage

from pacore_graph import PaCoReError, create_pacore_graph, resolve_rounds
from pacore_graph.cli import main
from pacore_graph.context import DEFAULTS
from pacore_graph.testing import ScriptedServer

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.integers(0, 200_000).map(lambda n: "x " * n),  # huge problems
)
round_specs = st.one_of(
    st.none(),
    st.integers(-3, 5),
    st.sampled_from(["low", "medium", "high", "Low", "", "4,", ",", "2,2", "1e3", "-1", "0"]),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-2, 4), st.text(max_size=2), st.none()), max_size=3),
    st.floats(allow_nan=True),
)
message_items = st.one_of(
    st.tuples(st.sampled_from(["user", "human", "assistant", "system", "tool", "bogus"]), texts),
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
            "content": st.one_of(texts, st.none(), st.integers()),
        },
    ),
    texts,
    st.integers(),
    st.none(),
)
messages = st.one_of(st.lists(message_items, max_size=4), st.none(), texts)


def one_line(exc: BaseException) -> bool:
    text = str(exc)
    return bool(text.strip()) and "\n" not in text


@given(round_specs)
def test_resolve_rounds_gives_a_valid_vector_or_a_one_line_error(spec):
    try:
        vector = resolve_rounds(spec)
    except PaCoReError as exc:
        assert one_line(exc) and "round" in str(exc).lower()
        return
    assert vector[-1] == 1 and all(isinstance(k, int) and k >= 1 for k in vector)


@given(messages, st.lists(st.integers(1, 3), max_size=2))
def test_graph_answers_or_raises_one_line_naming_the_input(msgs, rounds):
    model = FakeListChatModel(responses=["<think>t</think>ok"])
    graph = create_pacore_graph(model, rounds=rounds or 1).compile()
    try:
        out = asyncio.run(graph.ainvoke({"messages": msgs}))
    except PaCoReError as exc:
        assert one_line(exc)
        assert "message" in str(exc) or "problem" in str(exc)
        return
    assert isinstance(out["messages"][-1], AIMessage)
    assert out["messages"][-1].content == "ok"
    assert len(out["pacore"]["trajectories"]) == sum(out["pacore"]["round_vector"])


@pytest.fixture(scope="module")
def server():
    with ScriptedServer(lambda body: "<think>t</think>\\boxed{1}") as s:
        yield s


def run_cli(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def check(status, out, err, failure):
    """The CLI answered (``failure`` None), or printed ``failure`` as its one error line and
    exited 2 (the command can be fixed)."""
    assert "Traceback" not in err
    if failure is None:
        assert status == 0, err
        assert out.strip() == "\\boxed{1}"
        assert "pacore: error" not in err
    else:
        assert status == 2, (status, err)
        assert out == ""
        assert err.strip().splitlines() == [f"pacore: error: {failure}"]


def rounds_failure(rounds):
    """What the CLI must refuse ``--rounds`` with: the library's own error, or None."""
    try:
        resolve_rounds(rounds, max_k=DEFAULTS.max_k, max_trajectories=DEFAULTS.max_trajectories)
    except PaCoReError as exc:
        return str(exc)
    return None


def graph_failure(messages):
    """The error a graph fails ``messages`` with before any call, or None: the CLI must fail
    the same chat with the same words."""
    graph = create_pacore_graph(FakeListChatModel(responses=["ok"]), rounds=1).compile()
    try:
        asyncio.run(graph.ainvoke({"messages": messages}))
    except PaCoReError as exc:
        return str(exc)
    return None


def document_failure(where, raw):
    """What the CLI must refuse a ``--messages`` input of bytes ``raw`` with, or None."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"cannot read messages {where}: {exc}"
    if isinstance(document, dict) and "messages" in document:
        document = document["messages"]
    if not (
        isinstance(document, list)
        and document
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in document)
    ):
        return (
            f'messages {where}: expected a JSON list of {{"role", "content"}} objects, '
            'or {"messages": [...]}'
        )
    return graph_failure(document)


# A leading "-" makes argparse read a problem as an option (test_cli.py covers usage errors).
problems = texts.filter(lambda text: not text.startswith("-"))


@given(problem=problems, rounds=st.one_of(st.text(max_size=6), round_specs.map(str)))
def test_cli_problem_and_rounds(server, capsys, problem, rounds):
    argv = ["solve", problem, "--base-url", server.base_url, f"--rounds={rounds}"]
    # Settings fail before the input, as in the graph.
    failure = rounds_failure(rounds) or graph_failure([("user", problem)])
    check(*run_cli(argv, capsys), failure)


@given(document=st.one_of(messages, st.dictionaries(st.text(max_size=5), texts, max_size=2)))
def test_cli_messages_file(server, capsys, tmp_path_factory, document):
    path = tmp_path_factory.mktemp("m") / "messages.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    argv = ["solve", "--messages", str(path), "--base-url", server.base_url, "--rounds", "2"]
    failure = document_failure(f"file {path}", path.read_bytes())
    check(*run_cli(argv, capsys), failure)


@given(raw=st.binary(max_size=64))
def test_cli_messages_file_that_is_not_json(server, capsys, tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("m") / "messages.json"
    path.write_bytes(raw)
    argv = ["solve", "--messages", str(path), "--base-url", server.base_url]
    check(*run_cli(argv, capsys), document_failure(f"file {path}", raw))


@given(
    st.lists(st.integers(1, 3000), min_size=1, max_size=6),
    st.integers(1, 3000),
    st.integers(1, 10_000),
)
def test_round_bounds_allow_exactly_the_vectors_within_them(vector, max_k, max_trajectories):
    full = vector if len(vector) >= 2 and vector[-1] == 1 else [*vector, 1]
    try:
        resolved = resolve_rounds(vector, max_k=max_k, max_trajectories=max_trajectories)
    except PaCoReError as exc:
        assert one_line(exc)
        bound = "max_k" if max(full) > max_k else "max_trajectories"
        assert f"above {bound} = " in str(exc) and f"--{bound.replace('_', '-')}" in str(exc)
        assert max(full) > max_k or sum(full) > max_trajectories
        return
    assert resolved == full and max(full) <= max_k and sum(full) <= max_trajectories


numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.0, -0.0, 1e-9, 2.0]),
)


@given(
    temperature=numbers,
    top_p=numbers,
    max_tokens=st.one_of(st.none(), st.integers(-3, 3), st.floats(0, 3)),
    seed=st.one_of(st.none(), st.integers(-3, 3)),
)
def test_sampling_settings_run_or_fail_before_any_call(temperature, top_p, max_tokens, seed):
    def finite(v):
        return isinstance(v, int | float) and v == v and abs(v) != float("inf")

    rules = {
        "temperature": temperature is None or (finite(temperature) and temperature >= 0),
        "top_p": top_p is None or (finite(top_p) and 0 < top_p <= 1),
        "max_tokens": max_tokens is None or (isinstance(max_tokens, int) and max_tokens >= 1),
        "seed": seed is None or seed >= 0,
    }
    context = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
    model = FakeListChatModel(responses=["<think>t</think>ok"])
    graph = create_pacore_graph(model, rounds=1).compile()
    try:
        out = asyncio.run(graph.ainvoke({"messages": [("user", "2+2?")]}, context=context))
    except PaCoReError as exc:
        assert one_line(exc)
        assert model.i == 0  # no call was made
        broken = [name for name, ok in rules.items() if not ok]
        assert broken and str(exc).startswith(broken[0]), (exc, broken)
        return
    assert all(rules.values()), rules
    assert out["messages"][-1].content == "ok"


@given(
    concurrency=st.integers(-3, 3).map(str),
    temperature=st.one_of(st.floats(-2, 3).map(str), st.sampled_from(["nan", "inf", "-0"])),
)
def test_cli_concurrency_and_temperature(server, capsys, concurrency, temperature):
    argv = ["solve", "2+2?", "--base-url", server.base_url, "--rounds", "1"]
    argv += ["--concurrency", concurrency, "--temperature", temperature]
    status, out, err = run_cli(argv, capsys)
    valid = int(concurrency) >= 1 and float(temperature) >= 0 and temperature not in ("nan", "inf")
    assert "Traceback" not in err
    if valid:
        assert status == 0, (argv, err)
        assert out.strip() == "\\boxed{1}"
    else:
        assert status == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pacore: error: "), err
        assert ("concurrency" if int(concurrency) < 1 else "temperature") in lines[0], err
