"""``pacore curate``: the Stage-1 filter keeps the problems whose round-1 messages are mostly
wrong, writes them ready for a synthesis round, streams its rows and reuses eval's pool."""

import json
import threading

from pacore_graph.cli import main
from pacore_graph.eval import SAMPLE, load_problems
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import wait_for

PROBLEMS = load_problems(SAMPLE)
GOLD = {p.messages[-1]["content"]: p.answer for p in PROBLEMS}


def answering(right):
    """Round 1 thinks apart and answers every problem right (or 999, wrong)."""

    def reply(body):
        answer = GOLD[last_user_text(body)] if right else "999"
        return Reply(content=f"So \\boxed{{{answer}}}", reasoning_content="hmm")

    return reply


def curate(server, tmp_path, *extra):
    out = tmp_path / "kept.jsonl"
    argv = ["curate", str(SAMPLE), "--base-url", server.base_url, "--pool", "4"]
    status = main([*argv, "--out", str(out), *extra])
    summary = json.loads((tmp_path / "kept.jsonl.summary.json").read_text())
    return status, [json.loads(line) for line in out.read_text().splitlines()], summary


def test_every_answer_wrong_keeps_every_problem(scripted, tmp_path, capsys):
    server = scripted(answering(right=False))
    status, rows, summary = curate(server, tmp_path)
    assert status == 0, capsys.readouterr().err
    assert [r["id"] for r in rows] == [p.id for p in PROBLEMS]
    first = rows[0]
    assert first["messages"] == PROBLEMS[0].messages and first["ground_truth"] == {"answer": "391"}
    # The compacted messages (thinking dropped), graded, ready for a synthesis round.
    assert first["references"] == ["So \\boxed{999}"] * 4
    assert first["references_correct"] == [False] * 4 and first["message_accuracy"] == 0.0
    assert summary == {
        "pool": 4,
        "threshold": 0.375,
        "total": 8,
        "kept": 8,
        "failed": 0,
        "histogram": {"0/4": 8},
    }
    assert capsys.readouterr().out.startswith("kept 8/8 problems")
    assert len(load_problems(tmp_path / "kept.jsonl")) == 8  # pacore eval reads it back
    assert len(server.requests) == 8 * 4


def test_every_answer_right_keeps_none(scripted, tmp_path, capsys):
    server = scripted(answering(right=True))
    status, rows, summary = curate(server, tmp_path)
    assert status == 0, capsys.readouterr().err
    assert rows == [] and (summary["kept"], summary["histogram"]) == (0, {"4/4": 8})


def test_rows_stream_out_as_problems_finish(scripted, tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    seven = threading.Event()  # the rows of problems 1-7 are in the file
    seen = []

    def reply(body):
        if last_user_text(body) == PROBLEMS[-1].messages[-1]["content"]:
            seven.wait(30)
            seen.append(seven.is_set())
        return Reply(content="\\boxed{999}")

    def watch():
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 7, 30)
        seven.set()

    threading.Thread(target=watch, daemon=True).start()
    status, rows, _ = curate(scripted(reply), tmp_path, "--concurrency", "2")
    assert status == 0, capsys.readouterr().err
    assert len(rows) == 8 and seen == [True] * 4


def test_curate_reuses_the_pool_eval_made_and_resumes(scripted, redis_url, tmp_path, capsys):
    server = scripted(answering(right=False))
    base = [str(SAMPLE), "--base-url", server.base_url, "--redis-url", redis_url]
    argv = ["eval", *base, "--rounds", "2", "--pool", "4", "--limit", "2", "--no-plot"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    asked = len(server.requests)
    argv = ["curate", *base, "--pool", "4", "--limit", "2", "--out", str(tmp_path / "k.jsonl")]
    assert main(argv) == 0, capsys.readouterr().err
    assert main(argv) == 0, capsys.readouterr().err
    assert len(server.requests) == asked  # both pools read back from Redis
    assert len((tmp_path / "k.jsonl").read_text().splitlines()) == 2
