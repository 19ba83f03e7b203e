"""Straggler control: once q of a round finished, the rest get max(f x median, t_min) more,
then are stopped and the run goes on to the next round.

The slow calls of these tests hang (30 s) until the policy stops them; the quick ones
answer once every call of the round has arrived, so the policy can only stop calls in
flight. t_min is short and f is 0, so each test waits on the stop, not on a timer.
"""

import asyncio
import json
import threading

import pytest

from pacore_graph import InvalidSettingsError, create_pacore_graph, to_record
from pacore_graph.budget import BudgetTracker, RoundBudget
from pacore_graph.cli import _parser
from pacore_graph.context import DEFAULTS, context_from_options
from pacore_graph.resume import run_settings, settings_key
from pacore_graph.stragglers import (
    StragglerPolicy,
    StragglerWatch,
    straggler_policy,
    straggler_wait,
    trigger_count,
)
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import model_for, run_in_process, solve_command, wait_for

PROBLEM = "What is 17 * 23?"
FINAL = "<think>checked</think>\\boxed{391}"
QUICK = "<think>fast</think>391"
POLICY = {"straggler_quantile": 0.5, "straggler_factor": 0.0, "straggler_min_seconds": 0.05}


class Round1:
    """Round 1: the first ``quick`` calls answer once all ``k`` arrived, the others after
    ``slow`` seconds; later rounds and the final synthesis answer at once."""

    def __init__(self, k: int, quick: int, final_delay: float = 0.0, slow: float = 30) -> None:
        self.k, self.quick, self.final_delay, self.slow = k, quick, final_delay, slow
        self.round1: list[dict] = []
        self.later: list[dict] = []
        self.all_in = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, body):
        if "Reference" in last_user_text(body):
            with self.lock:
                self.later.append(body)
            return Reply(content=FINAL, delay=self.final_delay)
        with self.lock:
            n = len(self.round1)
            self.round1.append(body)
            if len(self.round1) == self.k:
                self.all_in.set()
        if n >= self.quick:
            return Reply(content=QUICK, delay=self.slow)
        self.all_in.wait(30)
        return Reply(content=QUICK)


def solve(server, api="async", rounds="8", graph_defaults=None, **context):
    graph = create_pacore_graph(model_for(server), rounds=rounds, **(graph_defaults or {}))
    app = graph.compile()
    inp = {"messages": [("user", PROBLEM)]}
    if api == "async":
        return asyncio.run(app.ainvoke(inp, context=context or None))
    return app.invoke(inp, context=context or None)


def stopped(out):
    return [t for t in out["pacore"]["trajectories"] if t["status"] == "stopped"]


@pytest.mark.parametrize(("api", "k"), [("async", 8), ("sync", 4)])
def test_the_stragglers_are_stopped_and_the_next_round_gets_the_finished(scripted, api, k):
    script = Round1(k=k, quick=k // 2)
    server = scripted(script)
    # min_success=2 raises round 2's trigger to both of its calls, so round 2 never waits on
    # the 0.05 s stop however far apart a loaded machine finishes them; round 1 is unchanged.
    out = solve(server, api, rounds=f"{k},2", min_success=2, **POLICY)
    run = out["pacore"]
    assert run["budget_exhausted"] is None  # a straggler stop is no budget running out
    first = run["rounds_done"][0]
    assert (first["k"], first["stopped"], len(first["references"])) == (k, k // 2, k // 2)
    assert [d["round"] for d in run["rounds_done"]] == [1, 2, 3]  # round 2 ran as usual
    assert len(stopped(out)) == k // 2
    errors = {t["error"] for t in stopped(out)}
    assert len(errors) == 1
    (error,) = errors
    assert error.startswith(f"straggler: stopped 0.05 s after {k // 2} of {k} trajectories (50%)")
    # Round 2's two calls carry the k/2 finished references.
    round2 = script.later[:2]
    assert len(script.later) == 3
    assert [last_user_text(b).count("391") for b in round2] == [k // 2, k // 2]
    assert out["messages"][-1].content == "\\boxed{391}"
    record = to_record(out)
    assert record["stopped"] == k // 2 and record["budget_exhausted"] is None
    if api == "async":  # the async API cancels the stopped calls; the sync one abandons them
        wait_for(lambda: server.cancelled >= k // 2, timeout=10)


def test_the_stop_is_streamed_as_trajectory_stopped(scripted):
    server = scripted(Round1(k=4, quick=2))
    graph = create_pacore_graph(model_for(server), rounds="4").compile()

    async def events():
        seen = []
        async for chunk in graph.astream(
            {"messages": [("user", PROBLEM)]}, context=POLICY, stream_mode="custom"
        ):
            seen.append(chunk)
        return seen

    seen = asyncio.run(events())
    stops = [e for e in seen if e["type"] == "trajectory_stopped"]
    # Which two hang depends on the order the calls arrive in, not on their index.
    finished = {e["index"] for e in seen if e["type"] == "trajectory_finished" and e["round"] == 1}
    assert len(stops) == 2 and {e["index"] for e in stops} == {0, 1, 2, 3} - finished
    assert all(e["error"].startswith("straggler: ") for e in stops)
    (done,) = [e for e in seen if e["type"] == "round_finished" and e["round"] == 1]
    assert (done["stopped"], done["references"], done["budget_exhausted"]) == (2, 2, None)


def test_the_final_round_is_never_cut(scripted):
    # The final synthesis takes 20x t_min; it is awaited, not stopped.
    server = scripted(Round1(k=4, quick=2, final_delay=1.0))
    out = solve(server, rounds="4", **POLICY)
    assert out["messages"][-1].content == "\\boxed{391}"
    final = [t for t in out["pacore"]["trajectories"] if t["round"] == 2]
    assert [t["status"] for t in final] == ["finished"]


def test_off_by_default_a_slow_trajectory_is_awaited(scripted):
    server = scripted(Round1(k=4, quick=2, slow=0.5))
    out = solve(server, rounds="4")
    assert out["pacore"]["settings"]["straggler_quantile"] == 1.0  # off, recorded as such
    assert out["pacore"]["stopped"] == 0
    assert len(out["pacore"]["rounds_done"][0]["references"]) == 4


def test_a_run_turns_off_the_graphs_policy_with_quantile_1(scripted):
    # The slow pair answers after 0.5 s, 10x t_min: with the policy on it would be stopped.
    server = scripted(Round1(k=4, quick=2, slow=0.5))
    out = solve(server, rounds="4", graph_defaults=POLICY, straggler_quantile=1.0)
    assert out["pacore"]["stopped"] == 0
    assert len(out["pacore"]["rounds_done"][0]["references"]) == 4


def test_the_graphs_default_policy_applies_to_every_run(scripted):
    server = scripted(Round1(k=4, quick=2))
    out = solve(server, rounds="4", graph_defaults=POLICY)
    assert out["pacore"]["stopped"] == 2
    assert out["pacore"]["budget_exhausted"] is None


def test_a_budget_stop_still_ends_the_exploration_with_the_policy_on(scripted):
    # Each quick reply has 1 word; a 2-token budget runs out at the 2nd finish, the moment
    # the policy would arm: the budget, not the policy, stops the rest.
    server = scripted(Round1(k=4, quick=2))
    out = solve(server, rounds="4,4", max_ttc_tokens=2, **{**POLICY, "straggler_min_seconds": 30})
    assert out["pacore"]["budget_exhausted"] == "max_ttc_tokens"
    assert {t["error"] for t in stopped(out)} == {"budget max_ttc_tokens ran out"}
    assert [d["round"] for d in out["pacore"]["rounds_done"]] == [1, 3]


def test_the_policy_waits_for_the_quorum_when_it_is_above_q(scripted):
    # q = 0.25 of 4 is 1 trajectory, but the quorum (min_success 0.75) is 3: the policy
    # arms only at the third finish, so the round keeps 3 references.
    server = scripted(Round1(k=4, quick=3))
    out = solve(server, rounds="4", min_success=0.75, **{**POLICY, "straggler_quantile": 0.25})
    first = out["pacore"]["rounds_done"][0]
    assert (first["stopped"], len(first["references"])) == (1, 3)


def test_the_policy_is_part_of_the_runs_settings():
    on = run_settings(DEFAULTS.__class__(**{**DEFAULTS.__dict__, **POLICY}))
    assert settings_key(on) != settings_key(run_settings(DEFAULTS))
    assert on["straggler_quantile"] == 0.5


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("straggler_quantile", 0),
        ("straggler_quantile", 1.5),
        ("straggler_quantile", "half"),
        ("straggler_factor", -1),
        ("straggler_factor", float("inf")),
        ("straggler_min_seconds", -0.5),
        ("straggler_min_seconds", True),
    ],
)
def test_impossible_straggler_settings_fail_before_any_call(scripted, setting, value):
    server = scripted()
    with pytest.raises(InvalidSettingsError, match=f"^{setting} must be a number") as info:
        solve(server, rounds="4", **{setting: value})
    assert "\n" not in str(info.value)
    assert server.requests == []


# -- the policy's arithmetic, on a controlled clock ---------------------------------------


def test_trigger_count_is_q_of_k_raised_to_the_quorum():
    policy = StragglerPolicy(0.5, 2.0, 1.0)
    assert trigger_count(policy, 8, quorum=4) == 4
    assert trigger_count(policy, 8, quorum=6) == 6
    assert trigger_count(StragglerPolicy(0.3, 2.0, 1.0), 10, quorum=0) == 3  # not 4
    assert trigger_count(StragglerPolicy(0.01, 2.0, 1.0), 8, quorum=0) == 1
    assert straggler_policy(1.0, 2.0, 1.0) is None and straggler_policy(None, 2, 1) is None


def test_the_wait_is_f_times_the_median_or_t_min():
    assert straggler_wait(StragglerPolicy(0.5, 2.0, 1.0), [1.0, 3.0, 2.0]) == (4.0, 2.0)
    assert straggler_wait(StragglerPolicy(0.5, 2.0, 10.0), [1.0, 3.0, 2.0]) == (10.0, 2.0)


def test_the_watch_arms_at_the_trigger_with_the_median_of_those_finished():
    now = [100.0]
    stops: list[str] = []
    watch = StragglerWatch(
        StragglerPolicy(0.75, 1.5, 0.0), k=4, trigger=3, stop=stops.append, clock=lambda: now[0]
    )
    for t in (101.0, 102.0):
        now[0] = t
        watch.finished()
        assert watch.timer is None
    now[0] = 106.0
    watch.finished()
    assert watch.timer is not None
    assert watch.timer.interval == 3.0  # 1.5 x median(1, 2, 6)
    watch.timer.cancel()
    watch.timer.function(*watch.timer.args)  # what the timer would do
    assert stops == ["straggler: stopped 3 s after 3 of 4 trajectories (75%) finished, "
                     "their median in 2 s"]  # fmt: skip


def test_the_whole_round_finishing_disarms_the_stop():
    stopped_with: list[str] = []
    watch = StragglerWatch(StragglerPolicy(0.5, 1000.0, 1000.0), 2, 1, stopped_with.append)
    watch.finished()
    timer = watch.timer
    assert timer is not None
    watch.finished()
    timer.join(5)
    assert not timer.is_alive() and stopped_with == []


def test_a_straggler_stop_wakes_the_round_with_its_own_error():
    tracker = BudgetTracker(
        RoundBudget(key="r", deadline=None, tokens_left=None),
        (StragglerPolicy(0.5, 0.0, 0.0), 2, 1),
    )
    woken = threading.Event()
    tracker.on_exhausted(woken.set)
    tracker.finished()
    assert woken.wait(5)
    assert tracker.reason == "straggler" and tracker.error.startswith("straggler: stopped 0 s")
    tracker.stop_stragglers("again")  # once only
    assert tracker.error.startswith("straggler: stopped 0 s")


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["solve", "eval"])
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--stragglers", "0.75,3,20"], {"quantile": 0.75, "factor": 3.0, "min_seconds": 20.0}),
        (["--stragglers", "0.9"], {"quantile": 0.9, "factor": None, "min_seconds": None}),
        (["--stragglers", "off"], {"quantile": 1.0, "factor": None, "min_seconds": None}),
        (
            ["--straggler-quantile", "0.5", "--straggler-factor", "1.5"],
            {"quantile": 0.5, "factor": 1.5, "min_seconds": None},
        ),
        (
            ["--stragglers", "0.5,2,10", "--straggler-min-seconds", "0"],
            {"quantile": 0.5, "factor": 2.0, "min_seconds": 0.0},
        ),
    ],
)
def test_cli_straggler_options(command, argv, expected):
    args = _parser().parse_args([command, "x", *argv])
    context = context_from_options(args)
    got = {k: context.get(f"straggler_{k}") for k in ("quantile", "factor", "min_seconds")}
    assert got == expected


@pytest.mark.parametrize("value", ["fast", "0.5,2,10,4", "0.5,,1", ""])
def test_cli_rejects_a_bad_stragglers_value_in_one_line(value, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["solve", "x", "--stragglers", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--stragglers: expected Q[,F[,SECONDS]]" in err


def test_pacore_solve_stops_the_stragglers(scripted):
    server = scripted(Round1(k=4, quick=2))
    result = run_in_process(
        solve_command(server, PROBLEM, "--rounds", "4", "--stragglers", "0.5,0,0.05", "--json")
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["stopped"] == 2 and record["budget_exhausted"] is None
    assert record["answer"] == "\\boxed{391}"


# -- pacore eval ----------------------------------------------------------------------------


def test_eval_takes_the_policy_and_reports_wall_time_per_setting(scripted, tmp_path, capsys):
    from pacore_graph.cli import main
    from pacore_graph.eval import SAMPLE

    server = scripted(Round1(k=4, quick=2))
    out = tmp_path / "out"
    argv = ["eval", str(SAMPLE), "--base-url", server.base_url, "--rounds", "4", "--limit", "1"]
    argv += ["--stragglers", "0.5,0,0.05", "--no-plot", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    wall = (out / "wall_time.md").read_text()
    assert wall in printed
    header, _, row = wall.splitlines()
    assert header.startswith("| setting | accuracy % | mean TTC (tokens) | wall s: mean |")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "PaCoRe [4]" and cells[6] == "1"  # one problem-run timed
    assert float(cells[3]) > 0 and cells[7] == "2 (40.0%)"  # 2 of 5 trajectories stopped
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pacore"]["straggler_quantile"] == 0.5
    assert manifest["pacore"]["straggler_min_seconds"] == 0.05
    (setting,) = manifest["settings"]
    timing = setting["wall_seconds"]
    assert (timing["timed"], timing["trajectories"], timing["stopped"]) == (1, 5, 2)
    assert timing["stopped_fraction"] == 0.4 and timing["mean"] > 0
