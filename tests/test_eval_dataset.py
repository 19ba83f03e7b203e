"""Loading eval files: both row forms, and every bad line named before any model call."""

import json

import pytest

from pacore_graph.eval import SAMPLE, DatasetError, load_problems


def write(tmp_path, *lines):
    path = tmp_path / "problems.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_shipped_sample_loads():
    problems = load_problems(SAMPLE)
    assert len(problems) == 8
    assert [p.id for p in problems] == [f"sample-{i}" for i in range(1, 9)]
    assert problems[0].answer == "391" and problems[5].answer == "\\frac{9}{2}"
    assert {p.category for p in problems} == {"arithmetic", "fractions"}
    assert problems[0].chat()[-1].type == "human"
    assert len({p.key for p in problems}) == 8


def test_reference_and_plain_forms(tmp_path):
    path = write(
        tmp_path,
        {
            "id": 7,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
            ],
            "ground_truth": {"answer": 4},
            "category": "easy",
        },
        "",
        {"problem": "3+3?", "answer": " 6 "},
    )
    first, second = load_problems(path)
    assert (first.id, first.answer, first.category, first.line) == (7, "4", "easy", 1)
    assert [m.type for m in first.chat()] == ["system", "human"]
    # The plain form: the problem is the one user message; the id defaults to the line.
    assert second.messages == [{"role": "user", "content": "3+3?"}]
    assert (second.id, second.answer, second.category) == (3, "6", None)
    assert load_problems(path, limit=1) == [first]


def test_problem_key_changes_with_the_problem():
    a = load_problems(SAMPLE)[0]
    b = type(a)(id=a.id, messages=[{"role": "user", "content": "other"}], answer=a.answer)
    assert a.key.startswith("sample-1-") and a.key != b.key
    assert "{" not in a.key and "}" not in a.key


def test_every_bad_line_is_named(tmp_path):
    path = write(
        tmp_path,
        {"problem": "ok?", "answer": 1},
        "{not json",
        {"problem": "no answer"},
        {"messages": [{"role": "user", "content": "x"}], "ground_truth": {}},
        {"messages": [{"role": "assistant", "content": "hi"}], "ground_truth": {"answer": 1}},
        {"problem": "p", "messages": [], "answer": 1},
        {"id": 1, "problem": "dup", "answer": 2},
        {"messages": [{"role": "robot", "content": "x"}], "ground_truth": {"answer": 1}},
        [1, 2],
    )
    with pytest.raises(DatasetError) as info:
        load_problems(path)
    problems = info.value.problems
    assert problems == [
        f"{path}:2: not JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:3: missing 'answer' (a non-empty string or number)",
        f"{path}:4: missing 'ground_truth': {{'answer': ...}} (a non-empty string or number)",
        f"{path}:5: 'messages' has no non-empty user message (the problem)",
        f"{path}:6: has both 'messages' and 'problem': use one form",
        f"{path}:7: id 1 repeats line 1",
        f"{path}:8: messages[0] must be {{'role': one of ['assistant', 'developer', 'system', "
        "'tool', 'user'], 'content': ...}",
        f"{path}:9: expected a JSON object, got list",
    ]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:2: not JSON") and message.endswith("and 3 more bad line(s)")


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no problems in the file"):
        load_problems(write(tmp_path, ""))
