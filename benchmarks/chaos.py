"""Chaos: SIGKILL ``pacore solve`` at random moments, resume it, and check the accounting.

Each of N runs solves its own problem with ``pacore solve --json`` on a private
redis-server (persistence off) against a scripted OpenAI-compatible server in this
process, and is SIGKILLed at one of five moments:

- ``before first call``: at spawn, once the thread's first checkpoint is stored, or
  once the first call arrived (every call is held: none is answered);
- ``mid-round``: an exploration round's calls have all arrived, the first j answered
  and the rest held; killed at once, or once the j answers are stored;
- ``compaction``: a round's calls all answered, the next round's held; killed as the
  last answer is handed out, once the round is stored, or once the next round asks;
- ``final call``: the final synthesis call arrived (held);
- ``after answer``: the record reached stdout (the process may exit first: then the
  kill did not land, and the run is still checked).

The moment is chosen by events (the server's requests and answers, what Redis holds,
the bytes on stdout), never by sleeping, and every wait is bounded. The same command
then runs again with ``--wait`` (it waits out the killed run's lease and resumes), then
once more. Checked for every run:

- calls asked twice: every reply is unique, so the rerun may ask a round only for the
  trajectories Redis did not hold as finished at the kill, each one kept trajectory
  must reach the final record unchanged, and the third run may ask nothing;
- record mismatches: the record printed by the rerun, by the third run (and by the
  killed run, when it printed one) each equal the record read back from Redis;
- resumed ok: the rerun exits 0 with a whole record (every trajectory of every round
  finished) and the third run exits 0 saying the thread was already answered.

Moments are dealt in turn (so any 5 runs meet all five), shuffled by ``--seed``; the
variant, the round and j are drawn per run. The exit status is 1 if any check failed.

    python benchmarks/chaos.py [--runs 50] [--seed 0] [--rounds 4,2] [--jobs 2] [--out DIR]

Writes ``<out>/chaos.{md,json}`` (default benchmarks/results/) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from report import RESULTS, loadavg, machine_line, run_info, table, write_results  # noqa: E402

from pacore_graph import ChatOpenAICompatible, create_pacore_graph, to_record  # noqa: E402
from pacore_graph.checkpoints import RedisSaver  # noqa: E402
from pacore_graph.testing import Reply, ScriptedServer, last_user_text  # noqa: E402
from pacore_graph.trajectories import is_finished, latest_trajectories  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

MOMENTS = ("before first call", "mid-round", "compaction", "final call", "after answer")
VARIANTS = {
    "before first call": ("at spawn", "thread stored", "first call arrived"),
    "mid-round": ("answers handed out", "answers stored"),
    "compaction": ("last answer handed out", "round stored", "next round asked"),
    "final call": ("final call arrived",),
    "after answer": ("record on stdout",),
}
MOMENT_SECONDS = 120.0
"""The longest wait for a moment to come (or a held call to be released)."""
RUN_SECONDS = 180.0
"""The longest a rerun may take (it first waits out the killed run's lease)."""
POLL_SECONDS = 0.05
"""How often a wait rechecks what no event announces: Redis' content, the process' end."""
TAG = re.compile(r"\[r(\d+)c(\d+)\]")


def round_of(body: dict[str, Any]) -> int:
    """The round of a request: 1 + the latest round among the replies it quotes (their
    tags), 1 when it quotes none (the plain problem)."""
    return 1 + max((int(r) for r, _ in TAG.findall(last_user_text(body))), default=0)


@dataclass
class Plan:
    """Where the first run of ``index`` is killed. Calls of round ``round`` from arrival
    number ``answer_first`` on, and every call of a later round, are held until the kill."""

    index: int
    moment: str
    variant: str
    round: int
    answer_first: int


class Responder:
    """Answers every call with a unique reply tagged with its round and number; in the
    first run, holds the calls the plan names until `release`."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.changed = threading.Condition()
        """Notified on every arrival and answer (and by the stdout reader)."""
        self.released = threading.Event()
        self.arrived: Counter[int] = Counter()
        self.answered: Counter[int] = Counter()
        self.calls = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        r = round_of(body)
        with self.changed:
            n, self.calls = self.calls, self.calls + 1
            nth = self.arrived[r]
            self.arrived[r] += 1
            self.changed.notify_all()
        hold = not self.released.is_set() and (
            r > self.plan.round or (r == self.plan.round and nth >= self.plan.answer_first)
        )
        if hold:
            self.released.wait(MOMENT_SECONDS)
            return Reply(status=503, error="held until the kill")
        with self.changed:
            self.answered[r] += 1
            self.changed.notify_all()
        return Reply(content=f"<think>call {n}</think>[r{r}c{n}] \\boxed{{391}}")


@dataclass
class Outcome:
    """One run's results."""

    index: int
    moment: str
    variant: str
    round: int
    answer_first: int
    landed: bool = False
    first_status: int | None = None
    saved_at_kill: dict[str, int] = field(default_factory=dict)
    """Finished trajectories Redis held per round right after the kill."""
    next_at_kill: list[str] = field(default_factory=list)
    """The nodes the thread's latest checkpoint had still to run, right after the kill."""
    said: dict[str, list[str]] = field(default_factory=dict)
    """What the rerun and the third run said of the thread (their ``thread ...:`` lines)."""
    asked: dict[str, dict[str, int]] = field(default_factory=dict)
    """Calls per round asked by each process: first, rerun, again."""
    asked_twice: int = 0
    mismatches: int = 0
    resumed_ok: bool = False
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.resumed_ok and not (self.asked_twice or self.mismatches or self.errors)


def plans(runs: int, vector: list[int], rng: random.Random) -> list[Plan]:
    """The kill moment of each run: the moments dealt in turn and shuffled, the rest drawn."""
    moments = [MOMENTS[i % len(MOMENTS)] for i in range(runs)]
    rng.shuffle(moments)
    final = len(vector)
    exploration = list(range(1, final))
    wide = [r for r in exploration if vector[r - 1] > 1] or exploration
    out = []
    for index, moment in enumerate(moments):
        variant = rng.choice(VARIANTS[moment])
        if moment == "before first call":
            r, j = 1, 0
        elif moment == "mid-round":
            r = rng.choice(wide)
            j = rng.randint(1, vector[r - 1] - 1) if vector[r - 1] > 1 else 0
        elif moment == "compaction":
            r = rng.choice(exploration)
            j = vector[r - 1]
        elif moment == "final call":
            r, j = final, 0
        else:
            r, j = final + 1, 0  # nothing held
        out.append(Plan(index, moment, variant, r, j))
    return out


class Chaos:
    """The runs of one benchmark: one Redis, one scripted server per run."""

    def __init__(self, redis_url: str, vector: list[int], lease_ttl: float, seed: int) -> None:
        self.redis_url = redis_url
        self.vector = vector
        self.lease_ttl = lease_ttl
        self.seed = seed
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",  # the record reaches the pipe as it is printed
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }

    def command(self, server: ScriptedServer, index: int) -> list[str]:
        rounds = ",".join(map(str, self.vector))
        return [
            sys.executable,
            "-m",
            "pacore_graph.cli",
            "solve",
            f"What is 17 * 23? (chaos run {index})",
            *("--base-url", server.base_url, "--rounds", rounds),
            *("--concurrency", str(max(self.vector)), "--redis-url", self.redis_url),
            *("--thread-id", self.thread(index), "--lease-ttl", f"{self.lease_ttl:g}"),
            *("--json", "--no-progress", "--wait"),
        ]

    def thread(self, index: int) -> str:
        return f"chaos-{self.seed}-{index}"

    def run(self, plan: Plan) -> Outcome:
        started = time.monotonic()
        out = Outcome(plan.index, plan.moment, plan.variant, plan.round, plan.answer_first)
        responder = Responder(plan)
        server = ScriptedServer(responder)
        server.start()
        model = ChatOpenAICompatible(
            base_url=server.base_url, model="scripted", api_key=SecretStr("none")
        )
        try:
            with RedisSaver.from_conn_string(self.redis_url, lease_ttl=None) as saver:
                graph = create_pacore_graph(model, rounds=self.vector).compile(checkpointer=saver)
                config = {"configurable": {"thread_id": self.thread(plan.index)}}
                self._run(plan, out, responder, server, graph, config, saver)
        except Exception as exc:  # a broken run is a failed check, not a crash of the rest
            out.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            responder.released.set()
            server.stop()
            out.seconds = round(time.monotonic() - started, 2)
        return out

    def _run(
        self,
        plan: Plan,
        out: Outcome,
        responder: Responder,
        server: ScriptedServer,
        graph: Any,
        config: Any,
        saver: RedisSaver,
    ) -> None:
        command = self.command(server, plan.index)

        def saved() -> dict[tuple[int, int], str]:
            """The finished trajectories Redis holds, pending writes included."""
            values = graph.get_state(config).values
            return {
                (t["round"], t["index"]): t["content"]
                for t in latest_trajectories(values.get("trajectories") or [])
                if is_finished(t)
            }

        def saved_in(r: int) -> int:
            return sum(rr == r for rr, _ in saved())

        def rounds_of(start: int) -> dict[str, int]:
            asked = Counter(round_of(body) for body in server.requests[start:])
            return {str(r): asked[r] for r in sorted(asked)}

        # The first run, killed at the plan's moment.
        printed = bytearray()
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, env=self.env, start_new_session=True
            )
            reader = threading.Thread(
                target=_read_into, args=(proc, printed, responder.changed), daemon=True
            )
            reader.start()
            try:
                moment = self._moment(
                    plan, responder, printed, lambda: saver.get_tuple(config) is not None, saved_in
                )
                if moment is not None and not _wait(responder.changed, moment, proc):
                    stderr.seek(0)
                    tail = stderr.read().decode(errors="replace").strip().splitlines()
                    out.errors.append(
                        f"the first run ended (status {proc.returncode}) before the moment: "
                        + (tail[-1] if tail else "no error line")
                    )
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(MOMENT_SECONDS)
                reader.join(MOMENT_SECONDS)
                if proc.stdout is not None:
                    proc.stdout.close()
        out.first_status = proc.returncode
        out.landed = proc.returncode == -signal.SIGKILL
        kept = saved()  # the process is dead: nothing changes Redis until the rerun
        out.next_at_kill = list(graph.get_state(config).next)
        out.saved_at_kill = {str(r): n for r, n in sorted(Counter(r for r, _ in kept).items())}
        first = len(server.requests)
        out.asked["first"] = rounds_of(0)
        responder.released.set()  # the rerun's calls are all answered

        # The rerun resumes; the third run reads the finished thread back.
        rerun = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=RUN_SECONDS
        )
        second = len(server.requests)
        out.asked["rerun"] = rounds_of(first)
        again = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=RUN_SECONDS
        )
        out.asked["again"] = rounds_of(second)
        for name, done in (("rerun", rerun), ("again", again)):
            out.said[name] = [x for x in done.stderr.splitlines() if x.startswith("thread ")]

        thread = config["configurable"]["thread_id"]  # the record's request_id, as solve's
        stored = _plain(to_record(graph.get_state(config).values, thread))
        # A run that failed is the rerun's check; a kill may cut the first run's print.
        records = {
            name: _parse(run.stdout)
            for name, run in (("rerun", rerun), ("again", again))
            if run.returncode == 0
        }
        first_record = _parse(printed.decode(errors="replace"))
        if first_record is not None or (printed and not out.landed):
            records["first"] = first_record
        out.mismatches = sum(record != stored for record in records.values())
        for name, record in records.items():
            if record != stored:
                out.errors.append(f"the {name} run printed a record unlike the stored one")

        whole = self._whole(stored)
        if rerun.returncode != 0 or not whole:
            out.errors.append(
                f"rerun: status {rerun.returncode}, "
                + ("record whole" if whole else "record not whole")
                + f": {_last_line(rerun.stderr)}"
            )
        answered = "already answered" in again.stderr
        if again.returncode != 0 or not answered:
            out.errors.append(f"third run: status {again.returncode}: {_last_line(again.stderr)}")
        out.resumed_ok = rerun.returncode == 0 and whole and again.returncode == 0 and answered

        # Each reply is unique: a kept trajectory whose content changed was asked again.
        final = {(t["round"], t["index"]): t["content"] for t in stored.get("trajectories", [])}
        changed = sum(final.get(key) != content for key, content in kept.items())
        asked = Counter(round_of(body) for body in server.requests[first:second])
        over = sum(
            max(0, asked[r] - (k - sum(rr == r for rr, _ in kept)))
            for r, k in enumerate(self.vector, 1)
        )
        out.asked_twice = max(changed, over) + (len(server.requests) - second)
        if out.asked_twice:
            out.errors.append(
                f"{out.asked_twice} call(s) asked twice: kept {out.saved_at_kill}, "
                f"asked {out.asked}, {changed} kept trajectory(ies) changed"
            )

    def _moment(
        self,
        plan: Plan,
        responder: Responder,
        printed: bytearray,
        stored: Callable[[], bool],
        saved_in: Callable[[int], int],
    ) -> Callable[[], bool] | None:
        """What to wait for before the kill (None: kill at once)."""
        r, j, v = plan.round, plan.answer_first, plan.variant
        k = self.vector[r - 1] if r <= len(self.vector) else 0
        if v == "at spawn":
            return None
        if v == "thread stored":
            return stored
        if v in ("first call arrived", "final call arrived"):
            return lambda: responder.arrived[r] >= 1
        if v == "answers handed out":
            return lambda: responder.arrived[r] >= k
        if v == "answers stored":
            return lambda: responder.arrived[r] >= k and saved_in(r) >= j
        if v == "last answer handed out":
            return lambda: responder.answered[r] >= k
        if v == "round stored":
            return lambda: saved_in(r) >= k
        if v == "next round asked":
            return lambda: responder.arrived[r + 1] >= 1
        return lambda: bool(printed)

    def _whole(self, record: dict[str, Any]) -> bool:
        """Every trajectory of every round finished, and an answer."""
        trajectories = record.get("trajectories") or []
        per_round = Counter(t["round"] for t in trajectories if t.get("status") == "finished")
        return (
            bool(record.get("answer"))
            and all(per_round[r] == k for r, k in enumerate(self.vector, 1))
            and len(trajectories) == sum(self.vector)
        )


def _read_into(
    proc: subprocess.Popen[bytes], into: bytearray, changed: threading.Condition
) -> None:
    """Copies the process' stdout into ``into`` as it comes, notifying ``changed``."""
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        with changed:
            into.extend(chunk)
            changed.notify_all()


def _wait(changed: threading.Condition, predicate: Callable[[], bool], proc: Any) -> bool:
    """Waits until ``predicate`` holds (True), the process ends (False) or `MOMENT_SECONDS`
    pass (TimeoutError). Woken by each arrival, answer and stdout chunk; rechecked every
    `POLL_SECONDS` for what no event announces."""
    deadline = time.monotonic() + MOMENT_SECONDS
    while not predicate():
        if proc.poll() is not None:
            return predicate()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the moment did not come in {MOMENT_SECONDS:g} s")
        with changed:
            changed.wait(POLL_SECONDS)
    return True


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A record as JSON reads it back (tuples become lists)."""
    return dict(json.loads(json.dumps(record, ensure_ascii=False, default=str)))


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


def parse_rounds(text: str) -> list[int]:
    """``4,2`` -> [4, 2, 1] (the final round appended, as ``pacore solve`` does)."""
    try:
        ks = [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"rounds as N,N,...: {text!r}") from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"rounds as N,N,...: {text!r}")
    vector = ks if ks[-1] == 1 and len(ks) > 1 else [*ks, 1]
    return vector


def summarize(outcomes: list[Outcome]) -> list[list[Any]]:
    rows = []
    for moment in (*MOMENTS, None):
        group = [o for o in outcomes if moment is None or o.moment == moment]
        rows.append(
            [
                moment or "all",
                len(group),
                sum(o.landed for o in group),
                sum(o.resumed_ok for o in group),
                sum(o.asked_twice for o in group),
                sum(o.mismatches for o in group),
            ]
        )
    return rows


HEADER = ("moment", "runs", "kills landed", "resumed ok", "calls asked twice", "record mismatches")


def render(info: dict[str, Any], outcomes: list[Outcome]) -> str:
    lines = [
        "# Chaos: SIGKILL `pacore solve` at random moments, then resume",
        "",
        machine_line(info),
        "",
        f"{info['runs']} runs, rounds {info['rounds']}, seed {info['seed']}, lease TTL "
        f"{info['lease_ttl']:g} s, {info['jobs']} at a time, {info['seconds']:.0f} s in all. "
        "Each run: `pacore solve --json` on Redis against the scripted server, SIGKILLed at "
        "the moment, rerun with `--wait`, then once more (`benchmarks/chaos.py`).",
        "",
        *table(HEADER, summarize(outcomes), "lrrrrr"),
        "",
        "A kill that did not land: the process had exited (after printing its answer) "
        "before the signal. Calls asked twice: a call the rerun made for a trajectory Redis "
        "already held as finished, or any call of the third run. Record mismatches: a "
        "printed record unlike the one read back from Redis.",
    ]
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [
            f"- run {o.index} ({o.moment}, {o.variant}): {'; '.join(o.errors)}" for o in failed
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="runs (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the moments (default 0)")
    parser.add_argument(
        "--rounds", type=parse_rounds, default=[4, 2, 1], help="exploration rounds (default 4,2)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument(
        "--lease-ttl", type=float, default=2.0, help="the runs' --lease-ttl (default 2)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results")
    args = parser.parse_args(argv)
    if len(args.rounds) < 2:
        parser.error("--rounds needs an exploration round before the final one")
    rng = random.Random(args.seed)
    schedule = plans(args.runs, args.rounds, rng)
    info = run_info(
        runs=args.runs,
        seed=args.seed,
        rounds=args.rounds,
        lease_ttl=args.lease_ttl,
        jobs=args.jobs,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        redis_server = RedisServer(Path(directory))
        redis_server.start()
        try:
            chaos = Chaos(redis_server.url, args.rounds, args.lease_ttl, args.seed)
            with ThreadPoolExecutor(max(1, args.jobs)) as pool:
                outcomes = []
                for outcome in pool.map(chaos.run, schedule):
                    outcomes.append(outcome)
                    verdict = "ok" if outcome.ok else "FAILED: " + "; ".join(outcome.errors)
                    print(
                        f"run {outcome.index} ({outcome.moment}, {outcome.variant}): {verdict}",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            redis_server.kill()
    info["seconds"] = round(time.monotonic() - started, 1)
    info["load_after"] = loadavg()
    info["summary"] = [dict(zip(HEADER, row, strict=True)) for row in summarize(outcomes)]
    info["results"] = [{**asdict(o), "ok": o.ok} for o in outcomes]
    text = render(info, outcomes)
    write_results("chaos", info, text, args.out)
    print(text, end="")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
