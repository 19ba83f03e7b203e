"""Grading: answer extraction, math-verify with a string fallback, votes and agreement."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pacore_graph.eval.grading import (
    agreement,
    extract_answer,
    grade,
    majority,
    normalize,
    vote_key,
)


@pytest.mark.parametrize(
    ("response", "answer", "source"),
    [
        ("So \\boxed{\\frac{1}{2}} and done.", "\\frac{1}{2}", "boxed"),
        ("\\boxed{1} first, then \\boxed{2}", "2", "boxed"),
        ("<think>maybe \\boxed{5}</think>It is 6.", "It is 6", "final_line"),
        ("Work.\n\n**Final answer:** $42$.", "42", "final_line"),
        ("steps\nThe answer is 17", "17", "final_line"),
        ("", None, None),
        ("<think>only thinking</think>", None, None),
        ("\\boxed{}", None, None),
    ],
)
def test_extract_answer(response, answer, source):
    extracted = extract_answer(response)
    if answer is None:
        assert extracted is None
    else:
        assert (extracted.text, extracted.source) == (answer, source)


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        ("\\boxed{0.75}", "\\frac{3}{4}"),
        ("\\boxed{1,207}", "1207"),
        ("\\boxed{4.5}", "9/2"),
        ("\\boxed{x + 1}", "1+x"),
        ("17 rows of 23 make 391.", "391"),
        ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}"),
    ],
)
def test_math_verify_decides_equivalent_answers(response, gold):
    verdict = grade(response, gold)
    assert verdict.correct and verdict.grader == "math-verify"


def test_wrong_math_answer_is_wrong_by_math_verify():
    verdict = grade("\\boxed{392}", "391")
    assert (verdict.answer, verdict.correct, verdict.grader) == ("392", False, "math-verify")


def test_words_fall_back_to_string_match():
    # math-verify would read both as products of symbols and call an anagram equal.
    assert grade("\\boxed{\\text{Paris}}", "paris").grader == "string"
    assert grade("\\boxed{\\text{Paris}}", "paris").correct
    assert not grade("\\boxed{sirap}", "paris").correct
    assert grade("The answer is Blue", "blue").correct


def test_no_answer_is_wrong_with_no_grader():
    verdict = grade("", "1")
    assert (verdict.answer, verdict.correct, verdict.grader) == (None, False, None)


def test_normalize():
    assert normalize(" $\\text{ 1,000 }$. ") == "1000"
    assert normalize("\\left( \\dfrac{1}{2} \\right)") == "(\\frac{1}{2})"


def test_votes_group_equivalent_answers():
    keys = [vote_key(extract_answer(r)) for r in ["\\boxed{0.5}", "\\boxed{\\frac12}", "so 1/2"]]
    assert len(set(keys)) == 1
    assert vote_key(extract_answer("\\boxed{x+1}")) == vote_key(extract_answer("\\boxed{1+x}"))
    assert vote_key(extract_answer("\\boxed{Paris}")) != vote_key(extract_answer("\\boxed{sirap}"))
    assert vote_key(None) is None


def test_majority_and_agreement():
    assert majority(["a", "b", "b", None]) == ("b", 2)
    assert majority(["b", "a", "a", "b"]) == ("b", 2)  # a tie goes to the first seen
    assert majority([None, None, "a"]) == ("a", 1)  # no-answers never win
    assert majority([None]) == (None, 0)
    assert agreement(["a", "a", None, "b"]) == 0.5
    assert agreement([]) is None


@given(st.lists(st.one_of(st.none(), st.sampled_from("abc")), min_size=1))
def test_majority_is_the_most_common_answer_seen_first(keys):
    winner, count = majority(keys)
    counts = {k: keys.count(k) for k in keys if k is not None}
    if not counts:
        assert (winner, count) == (None, 0)
        return
    assert count == max(counts.values()) == counts[winner]
    tied = [k for k in keys if k is not None and counts[k] == count]
    assert winner == tied[0]
    assert agreement(keys) == count / len(keys)
