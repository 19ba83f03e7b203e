"""The eval run against a scripted server: exact accuracy, TTC, emergent correctness, votes,
the first-round pool, the one concurrency bound, and resume from Redis."""

import asyncio
import json
import threading

import openai
import pytest

from pacore_graph.checkpoints import AsyncRedisSaver
from pacore_graph.eval import SAMPLE, build_settings, load_problems, run_eval, summarize
from pacore_graph.eval.pool import draw_indices
from pacore_graph.eval.report import markdown_table
from pacore_graph.eval.runner import EvalSpec
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import Gate, model_for, wait_for

PROBLEMS = load_problems(SAMPLE)
NUMBER = {p.messages[-1]["content"]: i + 1 for i, p in enumerate(PROBLEMS)}

# Round 1 (and every baseline sample) is right on problems 1-4; the synthesis is right on
# 1-6, so 5 and 6 are emergent (right from only wrong references), 7 and 8 stay wrong.
R1_RIGHT = {1, 2, 3, 4}
SYNTH_RIGHT = {1, 2, 3, 4, 5, 6}
R1_TOKENS, SYNTH_TOKENS = 100, 40
# Right answers in several forms, so grading goes through math-verify's equivalences.
RIGHT = {
    1: "<think>17 * 23</think>So \\boxed{391}",
    2: "1250 + 375 - 418 = \\boxed{1,207}",
    3: "84 * 3.5\nThe answer is 294.",  # no box: the final line
    4: "\\boxed{173}",
    5: "\\boxed{34.0}",
    6: "\\boxed{4.5}",  # gold \frac{9}{2}
    7: "\\boxed{5/12}",
    8: "\\boxed{0.25}",
}


def is_synthesis(body):
    return "Reference Responses:" in last_user_text(body)


def problem_number(body):
    """Which sample problem a request is about (plain or synthesis prompt)."""
    text = last_user_text(body)
    if is_synthesis(body):
        text = text.split("Original Problem:\n", 1)[1].split("\n\nReference Responses:", 1)[0]
    return NUMBER[text]


def scenario(body):
    """The deterministic responder the exact numbers below follow."""
    n = problem_number(body)
    if is_synthesis(body):
        content = RIGHT[n] if n in SYNTH_RIGHT else "\\boxed{999}"
        return Reply(content=content, completion_tokens=SYNTH_TOKENS)
    content = RIGHT[n] if n in R1_RIGHT else f"<think>guess</think>\\boxed{{{n}000}}"
    return Reply(content=content, completion_tokens=R1_TOKENS)


def spec(rounds=("low",), baselines=("single", "sc@4"), **kwargs):
    return EvalSpec(build_settings(rounds, baselines), **kwargs)


def by(stats, setting, category="all"):
    return next(s for s in stats if s.setting.name == setting and s.category == category)


async def test_exact_accuracy_ttc_and_emergent_correctness(scripted):
    server = scripted(scenario)
    result = await run_eval(model_for(server), PROBLEMS, spec(runs=2, concurrency=8))
    stats = summarize(result)

    single, sc, pacore = by(stats, "single"), by(stats, "sc@4"), by(stats, "pacore:low")
    assert (single.accuracy, sc.accuracy, pacore.accuracy) == (50.0, 50.0, 75.0)
    assert single.run_accuracies == sc.run_accuracies == [50.0, 50.0]
    assert (single.mean_ttc, sc.mean_ttc, pacore.mean_ttc) == (100, 400, 4 * 100 + 40)
    # Emergent: problems 5-8 had only wrong references in both runs; 5 and 6 came out right.
    assert (pacore.emergent, pacore.all_inputs_wrong, pacore.emergent_rate) == (4, 8, 0.5)
    assert pacore.agreement == [1.0, 1.0] and sc.agreement == [1.0]
    # 95% t-interval over problems: pass rates (1,1,1,1,1,1,0,0), t(7) = 2.364624.
    assert pacore.ci == pytest.approx((36.2998, 100.0), abs=1e-3)
    assert single.ci == pytest.approx((5.3128, 94.6872), abs=1e-3)
    assert by(stats, "pacore:low", "arithmetic").accuracy == 100.0
    assert by(stats, "pacore:low", "fractions").accuracy == pytest.approx(100 / 3)
    assert by(stats, "single", "fractions").accuracy == 0.0

    # Calls: 2 runs x 8 problems x (1 single + 4 SC + 4 round-1 + 1 synthesis).
    assert len(server.requests) == 2 * 8 * 10
    assert sum(map(is_synthesis, server.requests)) == 16

    rows = [r for r in result.rows if r["setting"] == "pacore:low" and r["run"] == 1]
    assert [r["request_id"] for r in rows] == [p.id for p in PROBLEMS]
    sixth = rows[5]
    assert sixth["answer"] == "4.5" and sixth["correct"] and sixth["grader"] == "math-verify"
    assert sixth["inputs_correct"] == [False] * 4 and sixth["emergent"] is True
    assert [len(r) for r in sixth["round_responses"]] == [4, 1]
    assert sixth["round_responses"][0][0]["content"] == "<think>guess</think>\\boxed{6000}"
    assert rows[2]["answer"] == "294" and rows[2]["correct"]  # from "The answer is 294."
    assert rows[0]["emergent"] is False and rows[0]["all_inputs_wrong"] is False
    assert all(r["status"] == "new" and r["error"] is None for r in result.rows)


class Sequenced:
    """Answers each problem's calls from its own list, in arrival order."""

    def __init__(self, replies):
        self.replies = replies
        self.calls = {}
        self.lock = threading.Lock()

    def __call__(self, body):
        text = last_user_text(body)
        with self.lock:
            i = self.calls[text] = self.calls.get(text, -1) + 1
        return Reply(content=self.replies[text][i], completion_tokens=10)


async def test_self_consistency_majority_vote(scripted, tmp_path):
    path = tmp_path / "vote.jsonl"
    rows = [
        {"id": "a", "problem": "What is 3 * 4?", "answer": "12"},
        {"id": "b", "problem": "Half of one?", "answer": "\\frac{1}{2}"},
        {"id": "c", "problem": "What is 3 + 4?", "answer": 7},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    replies = {
        # Equivalent forms vote together: 12, 12.0 and a final line "... 12" beat 13 and 14.
        "What is 3 * 4?": ["\\boxed{12}", "\\boxed{13}", "\\boxed{12.0}", "\\boxed{14}", "so 12"],
        # 0.4 and 2/5 (three votes) outvote the right 1/2 and 0.5 (two).
        "Half of one?": ["\\boxed{0.4}", "\\boxed{1/2}", "\\boxed{0.4}", "\\boxed{2/5}", "0.5"],
        # Responses without an answer never win: one vote is enough.
        "What is 3 + 4?": ["", "", "\\boxed{7}", "", ""],
    }
    server = scripted(Sequenced(replies))
    result = await run_eval(
        model_for(server), load_problems(path), spec([], ["sc@5"], concurrency=5)
    )
    a, b, c = result.rows
    assert (a["correct"], b["correct"], c["correct"]) == (True, False, True)
    assert (a["agreement"], b["agreement"], c["agreement"]) == ([0.6], [0.6], [0.2])
    assert a["answer"] in ("12", "12.0", "so 12") and b["answer"] in ("0.4", "2/5")
    assert c["final_response"] == "\\boxed{7}"
    assert all(r["ttc_tokens"] == 50 and len(r["round_responses"][0]) == 5 for r in result.rows)
    assert len(server.requests) == 15


class Recorder:
    """Records the runner's progress events."""

    def __init__(self):
        self.generated = self.tokens = self.runs = self.problems = 0

    def trajectories(self, count, tokens):
        self.generated += count
        self.tokens += tokens

    def run_done(self):
        self.runs += 1

    def problem_done(self):
        self.problems += 1


class Unique:
    """Every plain-prompt call gets a distinct reply and token count, so draws are traceable."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self, body):
        if is_synthesis(body):
            return Reply(content="\\boxed{391}", completion_tokens=5)
        with self.lock:
            self.n += 1
            n = self.n
        return Reply(content=f"candidate {n}: \\boxed{{{n}}}", completion_tokens=10 + n)


async def test_pool_is_generated_once_and_drawn_per_run(scripted):
    server = scripted(Unique())
    problems = PROBLEMS[:3]
    progress = Recorder()
    result = await run_eval(
        model_for(server),
        problems,
        spec(["low"], ["sc@3"], runs=3, pool=6, pool_seed=7, concurrency=8),
        progress=progress,
    )
    # 6 round-1 trajectories per problem, whatever the runs and settings; only the
    # synthesis calls are made per run.
    assert sum(not is_synthesis(b) for b in server.requests) == 3 * 6
    assert sum(map(is_synthesis, server.requests)) == 3 * 3
    for problem in problems:
        pool = result.pools[problem.key]
        assert [s["index"] for s in pool] == list(range(6))
        rows = [r for r in result.rows if r["request_id"] == problem.id]
        for row in rows:
            k = 4 if row["setting"] == "pacore:low" else 3
            draw = row["pool_draw"]
            assert draw == draw_indices(7, row["setting"], row["run"], problem.key, k, 6)
            assert len(set(draw)) == k
            drawn = [pool[i] for i in draw]
            assert [t["content"] for t in row["round_responses"][0]] == [
                s["content"] for s in drawn
            ]
            # Pooled trajectories' completion tokens count toward the run's TTC.
            synthesis = 5 if row["setting"] == "pacore:low" else 0
            assert row["ttc_tokens"] == sum(s["completion_tokens"] for s in drawn) + synthesis
        draws = {tuple(r["pool_draw"]) for r in rows if r["setting"] == "pacore:low"}
        assert len(draws) > 1  # runs draw independently
    # Progress counts what the backend generated: the pools and the synthesis calls.
    assert (progress.problems, progress.runs, progress.generated) == (3, 3 * 2 * 3, 18 + 9)
    assert progress.tokens == sum(10 + n for n in range(1, 19)) + 9 * 5


async def test_one_bound_over_all_calls(scripted):
    gate = Gate(lambda body: Reply(content=scenario(body).content))
    server = scripted(gate)
    gate.open_when(lambda: server.in_flight >= 3)
    await run_eval(model_for(server), PROBLEMS[:3], spec(["4"], ["sc@4"], runs=1, concurrency=3))
    assert len(server.requests) == 3 * (5 + 4)
    assert server.max_in_flight == 3


async def test_finished_eval_is_read_back_without_model_calls(scripted, redis_url):
    server = scripted(scenario)
    problems, eval_spec = PROBLEMS[:3], spec(["2"], ["single", "sc@2"], runs=2, pool=3)
    async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
        first = await run_eval(model_for(server), problems, eval_spec, checkpointer=saver)
    calls = len(server.requests)
    assert calls == 3 * 3 + 3 * 2  # pool of 3 per problem + one synthesis per run
    progress = Recorder()
    async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
        again = await run_eval(
            model_for(server), problems, eval_spec, checkpointer=saver, progress=progress
        )
    assert len(server.requests) == calls
    assert (progress.problems, progress.runs, progress.generated) == (3, 3 * 3 * 2, 0)
    assert all(r["status"] == "finished" for r in again.rows)
    assert [{**r, "status": "finished"} for r in first.rows] == again.rows
    assert again.pools == first.pools


class Holding:
    """Answers problems 1-4, then one round-1 call of problem 5; holds every other call."""

    def __init__(self):
        self.release = threading.Event()
        self.holding = True
        self.answered = 0
        self.fifth = 0
        self.lock = threading.Lock()

    def __call__(self, body):
        n = problem_number(body)
        with self.lock:
            hold = self.holding and (n > 5 or (n == 5 and self.fifth >= 1))
            if self.holding and n == 5 and not hold:
                self.fifth += 1
            if not hold:
                self.answered += 1
        if hold:
            self.release.wait(60)
            return Reply(content="too late", status=503)
        return scenario(body)


def saved_calls(saver):
    """The ids of the Send tasks (each one model call: a trajectory or a sample) whose
    writes ``saver`` has stored, filled in as they land."""
    saved = set()
    put_writes = saver.aput_writes

    async def aput_writes(config, writes, task_id, task_path=""):
        await put_writes(config, writes, task_id, task_path)
        if task_path.startswith("~__pregel_push"):
            saved.add(task_id)

    saver.aput_writes = aput_writes
    return saved


async def test_interrupted_eval_resumes_without_reasking_finished_work(scripted, redis_url):
    responder = Holding()
    server = scripted(responder)
    # Both settings sample problem 5 twice in round 1, so whichever thread got its one
    # answered call is a thread interrupted half way. 16 call slots: more than the 15
    # calls held below, so the held ones never starve the synthesis calls of problems 1-4
    # (in a real eval they would merely queue).
    eval_spec = spec(["2"], ["sc@2"], runs=1, concurrency=16)
    async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
        saved, progress = saved_calls(saver), Recorder()
        task = asyncio.ensure_future(
            run_eval(model_for(server), PROBLEMS, eval_spec, checkpointer=saver, progress=progress)
        )
        # Problems 1-4 (5 calls each) and one call of problem 5 answered; the other three
        # round-1 calls of problem 5 and the four of each of problems 6-8 held.
        await asyncio.to_thread(
            wait_for, lambda: responder.answered == 21 and server.in_flight == 15
        )
        # In Redis: the 8 runs of problems 1-4 (finished), and each answered call's result.
        await asyncio.to_thread(wait_for, lambda: progress.runs == 8 and len(saved) == 21)
        task.cancel()  # the interruption
        with pytest.raises(asyncio.CancelledError):
            await task
    responder.holding = False
    responder.release.set()
    await asyncio.to_thread(wait_for, lambda: server.in_flight == 0)
    before = len(server.requests)

    async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
        result = await run_eval(model_for(server), PROBLEMS, eval_spec, checkpointer=saver)
    new = server.requests[before:]
    numbers = [problem_number(b) for b in new]
    assert min(numbers) == 5  # nothing of problems 1-4 was asked again
    assert sum(n == 5 and not is_synthesis(b) for n, b in zip(numbers, new, strict=True)) == 3
    assert len(new) == 8 * 5 - 21  # everything else, exactly once
    status = {(r["setting"], r["request_id"]): r["status"] for r in result.rows}
    settings = ("sc@2", "pacore:2")
    assert all(status[(s, p.id)] == "finished" for s in settings for p in PROBLEMS[:4])
    assert all(status[(s, p.id)] == "interrupted" for s in settings for p in PROBLEMS[4:])
    # The resumed eval grades exactly like an uninterrupted one.
    stats = summarize(result)
    assert by(stats, "sc@2").accuracy == 50.0 and by(stats, "sc@2").mean_ttc == 200
    assert by(stats, "pacore:2").accuracy == 75.0
    assert by(stats, "pacore:2").mean_ttc == 2 * 100 + 40


async def test_a_failing_problem_is_recorded_and_the_rest_graded(scripted):
    def responder(body):
        if problem_number(body) == 3:
            return Reply(status=400, error="prompt is too long")
        return scenario(body)

    server = scripted(responder)
    result = await run_eval(model_for(server), PROBLEMS[:4], spec(["2"], ["single"]))
    failed = [r for r in result.rows if r["error"]]
    assert [(r["setting"], r["request_id"]) for r in failed] == [
        ("single", "sample-3"),
        ("pacore:2", "sample-3"),
    ]
    assert all(not r["correct"] and r["ttc_tokens"] is None for r in failed)
    assert "prompt is too long" in failed[0]["error"] and failed[0]["status"] == "failed"
    pacore = by(summarize(result), "pacore:2")
    assert (pacore.accuracy, pacore.errors, pacore.mean_ttc) == (75.0, 1, 240)


async def test_an_endpoint_rejecting_every_call_stops_the_eval(scripted):
    def responder(body):
        if problem_number(body) >= 3:
            return Reply(status=401, error="invalid api key")
        return scenario(body)

    server = scripted(responder)
    with pytest.raises(openai.AuthenticationError, match="invalid api key"):
        await run_eval(
            model_for(server), PROBLEMS, spec(["2"], [], concurrency=2), progress=Recorder()
        )
    # It stopped at the first rejected problem instead of failing every one in turn.
    assert {problem_number(b) for b in server.requests} <= {1, 2, 3, 4}


async def test_failure_messages_never_hold_the_api_key(scripted):
    key = "sk-test-secret-0123456789"
    server = scripted(lambda body: Reply(status=400, error=f"bad request for key {key}"))
    model = model_for(server, api_key=key)
    result = await run_eval(model, PROBLEMS[:1], spec(["2"], ["single"]))
    assert all(r["error"] and key not in r["error"] for r in result.rows)
    assert "[redacted]" in result.rows[0]["error"]
    assert key not in json.dumps(result.rows)


def citing(body):
    """Round 1 thinks apart (reasoning_content) and answers 391 on every problem; the
    synthesis cites two references and checks a third in its thinking: 4 markers a call."""
    if is_synthesis(body):
        return Reply(
            content="Reference 1 and Ref 2 agree; the references say \\boxed{391}",
            reasoning_content="checking reference 3 against the problem",
            completion_tokens=5,
        )
    return Reply(
        content="\\boxed{391}", reasoning_content="long thinking " * 50, completion_tokens=10
    )


async def test_cross_checking_counts_what_the_synthesis_wrote(scripted):
    server = scripted(citing)
    result = await run_eval(model_for(server), PROBLEMS[:2], spec(["4,2"], ["sc@2"], concurrency=8))
    rows = {r["setting"]: r for r in result.rows if r["request_id"] == PROBLEMS[0].id}
    # Round 2's two and the final one each wrote 4 markers; round 1 is no synthesis.
    assert rows["pacore:4,2"]["cross_checking"] == [None, 4.0, 4.0]
    assert rows["sc@2"]["cross_checking"] == []
    pacore = by(summarize(result), "pacore:4,2")
    assert pacore.cross_checking == [None, 4.0, 4.0]
    custom = spec(["2"], [], concurrency=8, markers=[r"agree"])
    result = await run_eval(model_for(server), PROBLEMS[:1], custom)
    assert result.rows[0]["cross_checking"] == [None, 1.0]


async def test_full_compaction_sends_the_thinking_and_counts_dropped_references(scripted):
    server = scripted(citing)
    settings = spec(["4"], [], concurrency=8, context={"compaction": "full"})
    await run_eval(model_for(server), PROBLEMS[:1], settings)
    (synthesis,) = [b for b in server.requests if is_synthesis(b)]
    thinking = "<think>" + "long thinking " * 50 + "</think>\\boxed{391}"
    assert last_user_text(synthesis).count(thinking) == 4
    # Each full reference is ~250 tokens by the 3-characters estimate: 2 of the 4 fit 700.
    limited = {"compaction": "full", "context_limit": 700}
    drop = spec(
        ["4"], [], concurrency=8, context={**limited, "on_context_overflow": "drop_longest"}
    )
    result = await run_eval(model_for(server), PROBLEMS[:2], drop)
    assert [r["dropped_references"] for r in result.rows] == [2, 2]
    assert by(summarize(result), "pacore:4").dropped == 4
    assert "| 4 |" in markdown_table(summarize(result))
    stop = spec(["4"], [], concurrency=8, context=limited)
    result = await run_eval(model_for(server), PROBLEMS[:1], stop)
    assert result.rows[0]["error"].startswith("ContextLimitError: round 2 synthesis prompt")
    reference = spec(["4"], [], concurrency=8, context={"context_limit": 700})
    result = await run_eval(model_for(server), PROBLEMS[:1], reference)
    assert result.rows[0]["dropped_references"] == 0 and result.rows[0]["correct"]
