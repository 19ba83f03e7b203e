"""Statistics and outputs: the 95% interval, TTC format, the paper-style table, CSV and plot."""

import csv
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pacore_graph.eval.dataset import Problem
from pacore_graph.eval.report import (
    format_ttc,
    interval,
    markdown_table,
    plot,
    summarize,
    t_quantile_975,
    wall_stats,
    wall_table,
    write_report,
)
from pacore_graph.eval.runner import EvalResult
from pacore_graph.eval.settings import build_settings

PROBLEMS = [
    Problem(id=i, messages=[{"role": "user", "content": f"p{i}"}], answer="1", category=c)
    for i, c in [(1, "A"), (2, "A"), (3, "B")]
]


def row(setting, run, problem, correct, ttc, **extra):
    return {
        "request_id": problem.id,
        "setting": setting,
        "run": run,
        "category": problem.category,
        "correct": correct,
        "ttc_tokens": ttc,
        "agreement": extra.pop("agreement", []),
        **extra,
    }


def result():
    settings = build_settings(["4"], ["sc@4"])
    rows = []
    for run in (1, 2):
        for p, right in zip(PROBLEMS, [True, run == 1, False], strict=True):
            rows.append(row("sc@4", run, p, right, 400, agreement=[0.5]))
        for p in PROBLEMS:
            rows.append(
                row(
                    "pacore:4",
                    run,
                    p,
                    p.id != 3 or run == 2,
                    4000 + 100 * p.id,
                    agreement=[0.75, 1.0],
                    emergent=p.id == 3 and run == 2,
                    all_inputs_wrong=p.id == 3,
                    error=None,
                )
            )
    rows.append(row("pacore:4", 3, PROBLEMS[0], False, None, error="BadRequestError: too long"))
    return EvalResult(rows=rows, problems=PROBLEMS, settings=settings, runs=2)


def test_t_quantiles():
    # scipy.stats.t.ppf(0.975, df), to 6 decimals.
    exact = {1: 12.706205, 2: 4.302653, 3: 3.182446, 7: 2.364624, 30: 2.042272, 31: 2.039513}
    exact |= {40: 2.021075, 60: 2.000298, 120: 1.979930, 1000: 1.962339}
    for df, value in exact.items():
        assert t_quantile_975(df) == pytest.approx(value, abs=1e-6)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_interval_over_problems():
    # mean 0.5, sd sqrt(0.125 / 3), P = 4: half width t(3) * sd / 2 = 3.182446 * 0.204124 / 2.
    low, high = interval([0.25, 0.5, 0.5, 0.75])
    assert (low, high) == pytest.approx((50 - 32.4807, 50 + 32.4807), abs=1e-3)
    assert interval([1.0]) is None
    assert interval([1.0, 1.0]) == (100.0, 100.0)
    assert interval([0.0, 1.0]) == (0.0, 100.0)  # clipped


@given(st.lists(st.floats(0, 1), min_size=2, max_size=50))
def test_interval_contains_the_mean_and_stays_in_range(rates):
    low, high = interval(rates)
    mean = 100 * math.fsum(rates) / len(rates)
    assert 0 <= low <= mean + 1e-9 and mean - 1e-9 <= high <= 100


def test_format_ttc_like_the_paper():
    assert [format_ttc(t) for t in (243_000, 1_796_400, 4_240, 440, None)] == [
        "243k",
        "1796k",
        "4.2k",
        "0.44k",
        "n/a",
    ]


def test_summarize():
    stats = {(s.setting.name, s.category): s for s in summarize(result())}
    sc, pacore = stats[("sc@4", "all")], stats[("pacore:4", "all")]
    assert sc.accuracy == pytest.approx(50.0) and sc.run_accuracies == pytest.approx(
        [200 / 3, 100 / 3]
    )
    assert sc.mean_ttc == 400 and sc.agreement == [0.5]
    # The failed row counts as wrong and as its own run; its TTC is unknown.
    assert pacore.run_accuracies == pytest.approx([200 / 3, 100.0, 0.0])
    assert pacore.accuracy == pytest.approx(100 * (2 / 3 + 1 + 0.5) / 3)
    assert pacore.mean_ttc == pytest.approx((4100 + 4200 + 4300) / 3)
    assert pacore.agreement == [0.75, 1.0]
    assert (pacore.emergent, pacore.all_inputs_wrong, pacore.emergent_rate) == (1, 2, 0.5)
    assert pacore.errors == 1
    assert stats[("pacore:4", "B")].accuracy == 50.0 and stats[("pacore:4", "B")].problems == 1
    assert stats[("pacore:4", "B")].ci is None


def test_markdown_table():
    table = markdown_table(summarize(result()))
    lines = table.splitlines()
    assert lines[0] == "| setting | K | all (3) | A (2) | B (1) |"
    assert lines[2] == "| SC@4 | [4] | 50.0 (0.40k) | 75.0 (0.40k) | 0.0 (0.40k) |"
    assert lines[3] == "| PaCoRe [4] | [4, 1] | 72.2 (4.2k) | 83.3 (4.2k) | 50.0 (4.3k) |"
    assert lines[7].startswith("| SC@4 | 50.0 | [") and "| r1 0.50 | — | — | — | 0 |" in lines[7]
    assert lines[8].endswith("| 4,200 | 2 | r1 0.75 | — | 0 | 1/2 (50.0%) | 1 |")


def test_labels_name_rows_in_the_table_and_keep_their_threads():
    settings = build_settings(["8", "1,1,1,1,1,1,1,1,1"], [], ["parallel [8]", "sequential [1x8]"])
    assert [s.label for s in settings] == ["parallel [8]", "sequential [1x8]"]
    assert settings[1].round_vector == (1,) * 9 and settings[1].name == "pacore:1,1,1,1,1,1,1,1"
    assert settings[0] == build_settings(["8"])[0]  # the same threads, relabelled
    assert build_settings(["8", "16"], [], ["parallel [8]"])[1].label == "PaCoRe [16]"
    with pytest.raises(ValueError, match="2 --label for 1 --rounds"):
        build_settings(["8"], [], ["a", "b"])


@pytest.mark.parametrize("correct", [False, True])
def test_the_plot_shows_accuracy_from_0_to_100(correct):
    data = result()
    for r in data.rows:
        r["correct"] = correct
    figure = plot(summarize(data), None)
    assert figure.axes[0].get_ylim() == (0, 100)
    figure.clear()


def test_write_report(tmp_path):
    table, paths = write_report(result(), tmp_path / "out", title="unit")
    assert set(paths) == {"rows", "markdown", "csv", "plot", "wall"}  # no pool was used
    assert paths["markdown"].read_text() == table
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths["rows"].read_text().splitlines()) == 13
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["setting"], r["category"]) for r in rows] == [
        ("sc@4", "all"),
        ("sc@4", "A"),
        ("sc@4", "B"),
        ("pacore:4", "all"),
        ("pacore:4", "A"),
        ("pacore:4", "B"),
    ]
    pacore = rows[3]
    assert pacore["cell"] == "72.2 (4.2k)" and pacore["round_vector"] == "4 1"
    assert (pacore["emergent"], pacore["all_inputs_wrong"], pacore["emergent_rate"]) == (
        "1",
        "2",
        "0.5",
    )
    assert rows[0]["emergent"] == "" and float(rows[0]["run_sd"]) == pytest.approx(23.5702, 1e-4)


def test_problems_without_a_category_have_their_own_column(tmp_path):
    problems = [*PROBLEMS, Problem(id=4, messages=[{"role": "user", "content": "p4"}], answer="1")]
    settings = build_settings(["4"])
    rows = [
        row("pacore:4", 1, p, right, 100) for p, right in zip(problems, [1, 0, 1, 1], strict=True)
    ]
    result = EvalResult(rows=rows, problems=problems, settings=settings, runs=1)
    stats = {(s.setting.name, s.category): s for s in summarize(result)}
    assert stats[("pacore:4", "uncategorized")].problems == 1
    assert stats[("pacore:4", "uncategorized")].accuracy == 100.0
    table, paths = write_report(result, tmp_path, plot_png=False)
    assert table.splitlines()[0] == "| setting | K | all (4) | A (2) | B (1) | uncategorized (1) |"
    assert table.splitlines()[2] == (
        "| PaCoRe [4] | [4, 1] | 75.0 (0.10k) | 50.0 (0.10k) | 100.0 (0.10k) | 100.0 (0.10k) |"
    )
    categories = [r["category"] for r in csv.DictReader(paths["csv"].open())]
    assert categories == ["all", "A", "B", "uncategorized"]
    # Without any category there is only the whole benchmark.
    bare = [
        Problem(id=i, messages=[{"role": "user", "content": f"q{i}"}], answer="1") for i in (1, 2)
    ]
    rows = [row("pacore:4", 1, p, True, 100) for p in bare]
    stats = summarize(EvalResult(rows=rows, problems=bare, settings=settings, runs=1))
    assert [s.category for s in stats] == ["all"]


def test_wall_table_puts_wall_time_and_stopped_beside_accuracy_and_ttc():
    data = result()
    data.timings = [
        {"setting": "pacore:4", "run": 1, "request_id": "p1", "wall_seconds": 2.0,
         "trajectories": 5, "stopped": 1},
        {"setting": "pacore:4", "run": 1, "request_id": "p2", "wall_seconds": 6.0,
         "trajectories": 5, "stopped": 0},
        {"setting": "pacore:4", "run": 2, "request_id": "p1", "wall_seconds": 4.0,
         "trajectories": 5, "stopped": 1},
    ]  # fmt: skip
    walls = wall_stats(data)
    lines = wall_table(summarize(data), walls).splitlines()
    assert lines[2] == "| SC@4 | 50.0 | 400 | — | — | — | 0 | — |"  # nothing timed
    assert lines[3].startswith("| PaCoRe [4] | 72.2 | 4,")
    assert lines[3].endswith("| 4.0 | 4.0 | 6.0 | 3 | 2 (13.3%) |")
    assert walls["pacore:4"] == {
        "timed": 3, "mean": 4.0, "median": 4.0, "max": 6.0,
        "trajectories": 15, "stopped": 2, "stopped_fraction": 0.1333,
    }  # fmt: skip
