"""The ``review`` setting: a pause after each exploration round where a person approves,
replaces or finishes with the references; what the next round is sent, checked at the
model server."""

import json
import re
import sys
import uuid

import pytest
import redis
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from pacore_graph import InvalidInputError, create_pacore_graph
from pacore_graph.checkpoints import RedisSaver
from pacore_graph.nodes.review import review_in_editor
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import model_for, pacore_in_process

PROBLEM = "What is 17 * 23?"
NOTE = "A person's note: 17 * 23 = 17 * 20 + 17 * 3 = 391."


def respond(body):
    """Each call says which round sent it (by how many references its prompt lists)."""
    n = len(re.findall(r"Reference \d+:", last_user_text(body)))
    return Reply(content=f"<think>n={n}</think>candidate with {n} references: 391")


@pytest.fixture(params=["memory", "redis"])
def saver(request):
    if request.param == "memory":
        return InMemorySaver()
    url = request.getfixturevalue("redis_url")
    return RedisSaver(redis.Redis.from_url(url), key_prefix=f"review-{uuid.uuid4().hex}")


def run(server, saver, rounds, **settings):
    graph = create_pacore_graph(model_for(server), rounds=rounds, review=True, **settings)
    config = {"configurable": {"thread_id": "t"}}
    return graph.compile(checkpointer=saver), config


def test_review_pauses_after_each_round_and_the_next_round_is_sent_the_edit(scripted, saver):
    server = scripted(respond)
    graph, config = run(server, saver, [2, 2])
    out = graph.invoke({"messages": [("user", PROBLEM)]}, config)
    (pause,) = out["__interrupt__"]
    assert pause.value["round"] == 1 and pause.value["problem"] == PROBLEM
    refs = pause.value["references"]
    assert sorted(r["index"] for r in refs) == [0, 1]
    assert {r["status"] for r in refs} == {"finished"}
    assert all(r["tokens"] and r["text"].startswith("candidate") for r in refs)
    assert len(server.requests) == 2  # round 2 waits for the person

    out = graph.invoke(Command(resume={"references": [NOTE]}), config)
    assert out["__interrupt__"][0].value["round"] == 2
    round_2 = [last_user_text(b) for b in server.requests[2:]]
    assert len(round_2) == 2
    assert all(NOTE in t and "candidate" not in t for t in round_2)

    out = graph.invoke(Command(resume=None), config)
    final = last_user_text(server.requests[-1])
    assert len(server.requests) == 5 and final.count("candidate with 1 references") == 2
    done = out["pacore"]["rounds_done"]
    assert [d["review"] for d in done] == ["edited", "approved", None]
    assert done[0]["references"] == [NOTE]  # recorded as sent


def test_finish_goes_straight_to_the_final_synthesis(scripted):
    server = scripted(respond)
    graph, config = run(server, InMemorySaver(), [2, 2, 2])
    out = graph.invoke({"messages": [("user", PROBLEM)]}, config)
    refs = [r["text"] for r in out["__interrupt__"][0].value["references"]]
    out = graph.invoke(Command(resume={"action": "finish"}), config)
    assert "__interrupt__" not in out and len(server.requests) == 3
    final = last_user_text(server.requests[-1])
    assert all(ref in final for ref in refs)
    assert [d["review"] for d in out["pacore"]["rounds_done"]] == ["finish", None]
    assert [t["round"] for t in out["pacore"]["trajectories"]] == [1, 1, 4]


@pytest.mark.parametrize("value", ["ok", {"references": "one"}, {"action": "stop"}, [NOTE]])
def test_a_resume_of_the_wrong_shape_is_a_one_line_error_and_the_pause_stays(scripted, value):
    server = scripted(respond)
    graph, config = run(server, InMemorySaver(), [2])
    graph.invoke({"messages": [("user", PROBLEM)]}, config)
    with pytest.raises(InvalidInputError) as error:
        graph.invoke(Command(resume=value), config)
    message = str(error.value)
    assert "\n" not in message
    assert '{"references": [str, ...]}' in message and '{"action": "finish"}' in message
    out = graph.invoke(Command(resume={"references": [NOTE]}), config)
    assert NOTE in last_user_text(server.requests[-1])
    assert out["messages"][-1].content


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_solve_review_edits_the_references_in_the_editor(scripted, tmp_path, request, store):
    server = scripted(respond)
    redis_args = ["--redis-url", request.getfixturevalue("redis_url")] if store == "redis" else []
    editor = tmp_path / "editor.py"
    # Drops every reference but the first, and adds a note of its own.
    editor.write_text(
        "import sys, re\n"
        "path = sys.argv[1]\n"
        "text = open(path).read()\n"
        "head, first, *rest = re.split(r'(?m)^=== reference .*===$', text)\n"
        f"open(path, 'w').write(head + '=== reference 1 ===' + first + "
        f"'=== reference ===\\n' + {NOTE!r})\n"
    )
    ran = pacore_in_process(
        "solve", PROBLEM, "--base-url", server.base_url, "--rounds", "2", "--review",
        "--json", "--thread-id", uuid.uuid4().hex, *redis_args,
        env={"EDITOR": f"{sys.executable} {editor}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    final = last_user_text(server.requests[-1])
    assert (
        len(server.requests) == 3
        and len(re.findall(r"Reference \d+:", final)) == 2
        and NOTE in final
    )
    record = json.loads(ran.stdout)
    assert (
        record["rounds"][0]["review"] == "edited" and record["rounds"][0]["references"][1] == NOTE
    )


@pytest.mark.parametrize(
    ("edit", "resume"),
    [("", None), ("text = 'FINISH\\n' + text", {"action": "finish"})],
    ids=["saved-as-is", "finish"],
)
def test_the_editor_approves_unchanged_references_and_finishes_on_a_finish_line(
    tmp_path, monkeypatch, edit, resume
):
    editor = tmp_path / "editor.py"
    editor.write_text(
        f"import sys\npath = sys.argv[1]\ntext = open(path).read()\n{edit}\n"
        "open(path, 'w').write(text)\n"
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    monkeypatch.delenv("VISUAL", raising=False)
    ref = {"index": 0, "status": "finished", "tokens": 5, "text": "candidate: 391"}
    assert review_in_editor({"round": 1, "references": [ref, ref]}) == resume
