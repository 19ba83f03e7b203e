import pytest

from pacore_graph import InvalidRoundsError, resolve_rounds


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("low", [4, 1]),
        ("medium", [16, 1]),
        ("high", [32, 4, 1]),
        ("HIGH", [32, 4, 1]),
        (4, [4, 1]),
        ("4", [4, 1]),
        ("32,4", [32, 4, 1]),
        (" 8 , 2 ", [8, 2, 1]),
        ([32, 4], [32, 4, 1]),
        ((2,), [2, 1]),
    ],
)
def test_final_round_is_appended(spec, expected):
    assert resolve_rounds(spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("32,4,1", [32, 4, 1]),
        ([32, 4, 1], [32, 4, 1]),
        ("4,1", [4, 1]),
        ([1, 1], [1, 1]),
        # One number is always an exploration round: 1 runs one draft and the final call.
        (1, [1, 1]),
        ("1", [1, 1]),
    ],
)
def test_a_vector_written_as_the_paper_writes_it_ends_with_its_own_final_round(spec, expected):
    assert resolve_rounds(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ([], "empty"),
        ("", "empty"),
        ("   ", "empty"),
        (0, "K >= 1"),
        ([4, 0], "K >= 1"),
        ("-2", "K >= 1"),
        ([4, -1], "K >= 1"),
        ([2.5], "integers"),
        (["4"], "integers"),
        (True, "preset or integers"),
        ("extreme", "unknown rounds"),
        ("4,x", "unknown rounds"),
        ("4,,2", "unknown rounds"),
        (4.0, "preset or integers"),
    ],
)
def test_bad_round_vectors_name_the_problem(spec, fragment):
    with pytest.raises(InvalidRoundsError, match=fragment):
        resolve_rounds(spec)
