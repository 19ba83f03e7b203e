import random

import pytest

from pacore_graph import (
    boxed_answer_compaction,
    order_references,
    reference_compaction,
)
from pacore_graph.compaction import resolve_compaction


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<think>a</think>b", "b"),
        ("<think>a</think>mid</think>\nfinal", "\nfinal"),
        ("no thinking here", "no thinking here"),
        ("<think>unfinished reasoning", "<think>unfinished reasoning"),
        ("<think>all thinking</think>", ""),
        ("", ""),
    ],
)
def test_reference_rule_keeps_text_after_last_think(content, expected):
    assert reference_compaction(content) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<think>\\boxed{1}</think>so \\boxed{\\frac{1}{2}} done", "\\boxed{\\frac{1}{2}}"),
        ("\\boxed{1} then \\boxed{2}", "\\boxed{2}"),
        ("first \\boxed{7} then cut \\boxed{\\frac{1", "\\boxed{7}"),
        ("no box at all", ""),
        ("<think>\\boxed{9}</think>answer without box", ""),
    ],
)
def test_boxed_rule_keeps_only_the_final_boxed_answer(content, expected):
    assert boxed_answer_compaction(content) == expected


def test_reference_order_is_length_sort_then_seeded_shuffle():
    contents = ["ccc", "a", "bbbbb", "dd", "eeee", "f" * 10]
    # The reference pipeline's own steps, written out.
    expected = sorted(contents, key=len)
    random.Random(42).shuffle(expected)
    assert order_references(contents, str, 42) == expected
    assert order_references(contents, str, 42) == order_references(list(contents), str, 42)
    assert order_references(contents, str, 42) != order_references(contents, str, 7)


def test_compaction_is_pluggable_by_name_or_callable():
    assert resolve_compaction("boxed") is boxed_answer_compaction
    shout = str.upper
    assert resolve_compaction(shout) is shout
    with pytest.raises(ValueError, match="unknown compaction 'nope'"):
        resolve_compaction("nope")


def test_full_compaction_keeps_the_thinking_wherever_it_arrived():
    from langchain_core.messages import AIMessage

    from pacore_graph.compaction import full_compaction
    from pacore_graph.trajectories import finished_record, reference_text

    assert resolve_compaction("full") is full_compaction
    inline = AIMessage(content="<think>work</think>so 7")
    apart = AIMessage(content="so 7", additional_kwargs={"reasoning_content": "work"})
    for message in (inline, apart):
        full = finished_record(1, 0, message, compaction=full_compaction)
        assert reference_text(full) == "<think>work</think>so 7"
        # The other rules read only the content, as the reference does.
        assert reference_text(finished_record(1, 0, message)) == "so 7"
