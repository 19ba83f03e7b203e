"""PaCoRe-graph beside the official stepfun-ai/PaCoRe pipeline, in the same run (issue 15).

Both contenders solve the same problems against the same simulated OpenAI-compatible
server (``simserver.py``), whose latency draws are keyed on the bytes of each prompt, so
the two send byte-identical prompts and meet identical latencies (checked on the
server's log: same prompt groups, same draws). The official pipeline runs unmodified
from an extract outside the repository (``official.py``; ``--official DIR`` or
``$PACORE_OFFICIAL``); pacore is whatever ``pacore_graph`` is on the path. Every run is a
fresh interpreter (``workload.py``); contenders alternate (official, pacore, official,
pacore, ...) for ``--repeats`` rounds, and the report gives median and range.

    A         16 problems x [32,4] (+ final 1), 2 s a call (ideal 6 s): wall / ideal
    B         64 problems x [16] (+1), 5 s a call, 1,024 in flight (ideal 10 s): wall / ideal,
              and peak RSS growth per trajectory in flight
    C         A at zero latency: process CPU per trajectory, and a cProfile of pacore's
    dispatch  one round of K=1,024 and K=16,384 on an in-process fake model (no HTTP):
              time per trajectory at 16,384 over that at 1,024
    redis     A checkpointed by AsyncRedisSaver on a private redis-server: wall over no
              saver, bytes stored per trajectory over the reply's bytes per trajectory
    scale     N = 16, 64, 256 problems x [32,4] (+1) at zero latency, and Redis at the
              largest N (issue 25): wall, CPU, peak RSS and full collections per contender;
              wall per trajectory at the largest N over the smallest's

    python benchmarks/run.py --official ../pacore-official        # everything (~8 min)
    python benchmarks/run.py --quick --only A,C                     # a smoke run
    python benchmarks/run.py --only scale --name scale                # issue 25's table
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from ideal import analyze, draws  # noqa: E402
from official import official_dir  # noqa: E402
from profiles import profile_summary, render_profile  # noqa: E402
from report import (  # noqa: E402
    RESULTS,
    fmt,
    loadavg,
    machine_line,
    median_range,
    run_info,
    table,
    write_results,
)
from services import Redis, Sim  # noqa: E402

WORKLOADS = ("A", "B", "C", "dispatch", "redis", "scale")


@dataclass(frozen=True)
class Sizes:
    """The workloads' sizes: the issue's, or ``--quick``'s smaller ones."""

    a_problems: int
    a_rounds: tuple[int, ...]
    a_call_s: float
    b_problems: int
    b_rounds: tuple[int, ...]
    b_call_s: float
    dispatch_k: tuple[int, int]
    scale_problems: tuple[int, ...] = (16, 64, 256)

    @staticmethod
    def of(quick: bool) -> Sizes:
        if quick:
            return Sizes(4, (32, 4), 0.5, 16, (16,), 1.25, (256, 2048), (4, 16))
        return Sizes(16, (32, 4), 2.0, 64, (16,), 5.0, (1024, 16384))


# -- one run -------------------------------------------------------------------------


def workload_process(spec: dict[str, Any]) -> dict[str, Any]:
    """``workload.py`` in a fresh interpreter; its RESULT line, or an error with its stderr."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "workload.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{spec['kind']} workload failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])  # type: ignore[no-any-return]


@dataclass
class Bench:
    """What the runs share: options, the simulated servers, Redis, a temporary directory."""

    official: Path
    tmp: Path
    sims: dict[float, Sim]
    redis: Redis | None = None
    runs: int = 0

    def sim(self, call_s: float) -> Sim:
        """A server whose every call takes ``call_s`` (min_s = max_s), started once.

        Replies of about 1.8 KB at 2 s (1 KB of thinking, an 800 B conclusion), the size
        the issue measured with: the Redis goal is relative to the reply's bytes, and the
        server's defaults give 330 B replies at 2 s (its thinking is whole KBs)."""
        if call_s not in self.sims:
            self.sims[call_s] = Sim(
                {
                    "seed": 0,
                    "min_s": call_s,
                    "max_s": call_s,
                    "bytes_per_token": 8,
                    "conclusion_bytes": 800,
                }
            )
        return self.sims[call_s]

    def run(
        self,
        workload: str,
        contender: str,
        rep: int,
        *,
        call_s: float,
        latency_scale: float,
        problems: int,
        rounds: tuple[int, ...],
        saver: str = "none",
        profile: bool = False,
        gc_freeze: bool = False,
    ) -> dict[str, Any]:
        """One contender solving one workload once; the row of that run."""
        sim = self.sim(call_s)
        sim.reset(latency_scale)
        self.runs += 1
        run_id = f"run{self.runs}"
        spec: dict[str, Any] = {
            "kind": "official" if contender == "official" else "pacore",
            "base_url": sim.base_url,
            "problems": problems,
            "rounds": list(rounds),
            "saver": saver,
            "run_id": run_id,
            "official": str(self.official),
            "official_log": str(self.tmp / f"{run_id}-official.log"),
            "gc_freeze": gc_freeze,
        }
        if saver == "redis":
            assert self.redis is not None
            self.redis.client.flushall()
            spec["redis_url"] = self.redis.url
        if profile:
            spec["profile"] = str(self.tmp / f"{run_id}.prof")
        server0 = sim.stats()["cpu_s"]
        load0 = loadavg()
        began = time.monotonic()
        result = workload_process(spec)
        stats = sim.stats()
        log = sim.log()
        n = max(1, result["trajectories"])
        row: dict[str, Any] = {
            "workload": workload,
            "contender": contender,
            "rep": rep,
            "problems": problems,
            "round_vector": [*rounds, 1],
            "call_s": call_s * latency_scale,
            "trajectories": result["trajectories"],
            "expected_trajectories": problems * (sum(rounds) + 1),
            "wall_s": result["wall_s"],
            "cpu_s": result["cpu_s"],
            "cpu_ms_per_trajectory": 1000 * result["cpu_s"] / n,
            "rss_growth_kb": (result["rss_peak"] - result["rss_baseline"]) / 1024,
            "rss_peak_mb": result["rss_peak"] / 2**20,
            "gc_collections": result.get("gc_collections"),
            "gc_cpu_s": result.get("gc_cpu_s"),
            "server_cpu_s": stats["cpu_s"] - server0,
            "server_max_in_flight": stats["max_in_flight"],
            "content_bytes_per_trajectory": result.get("content_bytes", 0) / n,
            "n_errors": result["n_errors"],
            "errors": result["errors"],
            "load_before": load0,
            "load_after": loadavg(),
            "draws": draws(log, result["t0"]),
        }
        others = result["machine_busy_s"] - result["cpu_s"] - row["server_cpu_s"]
        if result["machine_total_s"] > 0:
            row["others_cpu_pct"] = round(100 * max(0.0, others) / result["machine_total_s"], 1)
        row.update(analyze(log, result))
        if latency_scale > 0 and row["ideal_s"] > 0:
            row["wall_over_ideal"] = row["wall_s"] / row["ideal_s"]
        if saver == "redis":
            assert self.redis is not None
            stored, memory, channels = self.redis.stored_bytes()
            row["redis_stored_bytes"] = stored
            row["redis_memory_bytes"] = memory
            row["redis_bytes_by_channel"] = channels
            row["redis_bytes_per_trajectory"] = stored / n
        if profile:
            row["profile_summary"] = profile_summary(spec["profile"])
        progress(row, time.monotonic() - began)
        return row

    def dispatch(self, k: int, rep: int) -> dict[str, Any]:
        """One round of K on the in-process fake model (+ the final round of 1)."""
        load0 = loadavg()
        began = time.monotonic()
        result = workload_process({"kind": "dispatch", "k": k})
        n = max(1, result["trajectories"])
        row = {
            "workload": "dispatch",
            "contender": "pacore",
            "rep": rep,
            "k": k,
            "trajectories": result["trajectories"],
            "wall_s": result["wall_s"],
            "ms_per_trajectory": 1000 * result["wall_s"] / n,
            "cpu_ms_per_trajectory": 1000 * result["cpu_s"] / n,
            "rss_growth_kb": (result["rss_peak"] - result["rss_baseline"]) / 1024,
            "n_errors": result["n_errors"],
            "errors": result["errors"],
            "load_before": load0,
            "load_after": loadavg(),
        }
        progress(row, time.monotonic() - began)
        return row


def progress(row: dict[str, Any], took: float) -> None:
    extra = f"K={row['k']} " if "k" in row else ""
    ratio = f", wall/ideal {row['wall_over_ideal']:.3f}" if "wall_over_ideal" in row else ""
    print(
        f"[{took:5.1f}s] {row['workload']} {row['contender']} {extra}#{row['rep'] + 1}: "
        f"wall {row['wall_s']:.3f} s{ratio}, cpu {row['cpu_ms_per_trajectory']:.3f} ms/traj, "
        f"{row['trajectories']} traj, {row['n_errors']} errors",
        file=sys.stderr,
        flush=True,
    )


# -- the workloads -------------------------------------------------------------------


FROZEN = "pacore + the CLI's GC"
"""pacore in a process that tunes the cyclic GC as ``pacore solve``/``eval`` do: its imports
frozen out of the collector's reach (``gc.freeze()``), whose passes over LangChain's,
pydantic's and openai's long-lived objects are a third of pacore's CPU, and thresholds
raised (``workload.CLI_GC_THRESHOLD``), so that full passes over the trajectories in flight
stay rare (issue 25)."""
FROZEN_REDIS = "pacore + Redis + the CLI's GC"


def run_all(bench: Bench, only: set[str], sizes: Sizes, repeats: int) -> list[dict[str, Any]]:
    """Every chosen workload, contenders alternating within each repeat."""
    rows: list[dict[str, Any]] = []
    a = {
        "problems": sizes.a_problems,
        "rounds": sizes.a_rounds,
        "call_s": sizes.a_call_s,
        "latency_scale": 1.0,
    }
    b = {
        "problems": sizes.b_problems,
        "rounds": sizes.b_rounds,
        "call_s": sizes.b_call_s,
        "latency_scale": 1.0,
    }
    c = {**a, "latency_scale": 0.0}
    for rep in range(repeats):
        if "A" in only:
            rows.append(bench.run("A", "official", rep, **a))
        if only & {"A", "redis"}:
            rows.append(bench.run("A", "pacore", rep, **a))
        if "A" in only:
            rows.append(bench.run("A", FROZEN, rep, gc_freeze=True, **a))
        if "redis" in only:
            rows.append(bench.run("A", "pacore + Redis", rep, saver="redis", **a))
        if "B" in only:
            rows.append(bench.run("B", "official", rep, **b))
            rows.append(bench.run("B", "pacore", rep, **b))
            rows.append(bench.run("B", FROZEN, rep, gc_freeze=True, **b))
        if "C" in only:
            rows.append(bench.run("C", "official", rep, **c))
            rows.append(bench.run("C", "pacore", rep, **c))
            rows.append(bench.run("C", FROZEN, rep, gc_freeze=True, **c))
        if "dispatch" in only:
            rows += [bench.dispatch(k, rep) for k in sizes.dispatch_k]
    if "scale" in only:
        for rep in range(repeats):
            for n in sizes.scale_problems:
                z = {"problems": n, "rounds": (32, 4), "call_s": sizes.a_call_s}
                z["latency_scale"] = 0.0
                workload = f"scale N={n}"
                rows.append(bench.run(workload, "official", rep, **z))
                rows.append(bench.run(workload, "pacore", rep, **z))
                rows.append(bench.run(workload, FROZEN, rep, gc_freeze=True, **z))
                if n == max(sizes.scale_problems):
                    rows.append(bench.run(workload, "pacore + Redis", rep, saver="redis", **z))
                    rows.append(
                        bench.run(workload, FROZEN_REDIS, rep, saver="redis", gc_freeze=True, **z)
                    )
    if "C" in only:  # apart: the profiler's own cost must not enter C's numbers
        rows.append(bench.run("C", "pacore, profiled", 0, profile=True, **c))
    return rows


def select(rows: list[dict[str, Any]], workload: str, contender: str, **match: Any) -> list[dict]:
    return [
        r
        for r in rows
        if r["workload"] == workload
        and r["contender"] == contender
        and all(r.get(k) == v for k, v in match.items())
    ]


def paired(
    rows: list[dict[str, Any]],
    workload: str,
    num: str,
    den: str,
    value: Callable[[dict[str, Any]], float],
) -> list[float]:
    """Per repeat, value(num's run) / value(den's run): runs of one repeat follow each other,
    so a change in the shared machine's load hits both alike."""
    out = []
    for x in select(rows, workload, num):
        y = select(rows, workload, den, rep=x["rep"])
        if y and value(y[0]):
            out.append(value(x) / value(y[0]))
    return out


def values(rows: list[dict[str, Any]], workload: str, contender: str, key: str) -> list[float]:
    return [r[key] for r in select(rows, workload, contender) if r.get(key) is not None]


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass
class Goal:
    goal: str
    measured: float | None
    limit: float
    shown: str

    @property
    def met(self) -> str:
        if self.measured is None:
            return "not measured"
        return "met" if self.measured <= self.limit else "NOT met"


def summarize(rows: list[dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    """The issue's table, the pacore-only numbers, the goals, and the prompt check."""

    def wall(r: dict[str, Any]) -> float:
        return float(r["wall_s"])

    def cpu(r: dict[str, Any]) -> float:
        return float(r["cpu_ms_per_trajectory"])

    main, goals = [], []
    a_label = (
        f"A: {sizes.a_problems} problems x {list(sizes.a_rounds)} (+1), {sizes.a_call_s:g} s "
        f"a call (ideal {sizes.a_call_s * (len(sizes.a_rounds) + 1):g} s)"
    )
    b_in_flight = sizes.b_problems * max(sizes.b_rounds)
    b_label = (
        f"B: {sizes.b_problems} problems x {list(sizes.b_rounds)} (+1), {sizes.b_call_s:g} s "
        f"a call, {b_in_flight:,} in flight (ideal {sizes.b_call_s * 2:g} s)"
    )
    for (workload, label), contender in itertools.product(
        (("A", a_label), ("B", b_label)), ("pacore", FROZEN)
    ):
        ratio = paired(rows, workload, contender, "official", wall)
        if not select(rows, workload, "official") or not ratio:
            continue
        suffix = "" if contender == "pacore" else f" ({contender})"
        main.append(
            [
                f"{label}: wall / ideal{suffix}",
                median_range(values(rows, workload, "official", "wall_over_ideal")),
                median_range(values(rows, workload, contender, "wall_over_ideal")),
                median_range(ratio),
            ]
        )
        goals.append(
            Goal(
                f"{workload}: pacore's wall <= the official pipeline's{suffix}",
                med(ratio),
                1.0,
                median_range(ratio) + " x",
            )
        )
    if select(rows, "B", "official"):

        def per_flight(r: dict[str, Any]) -> float:
            return float(r["rss_growth_kb"]) / b_in_flight

        kb = {c: [per_flight(r) for r in select(rows, "B", c)] for c in ("official", "pacore")}
        main.append(
            [
                "B: peak RSS growth per trajectory in flight, KB",
                median_range(kb["official"], 1),
                median_range(kb["pacore"], 1),
                median_range(paired(rows, "B", "pacore", "official", per_flight)),
            ]
        )
        goals.append(
            Goal(
                "memory per trajectory in flight <= 20 KB",
                med(kb["pacore"]),
                20.0,
                median_range(kb["pacore"], 1) + " KB",
            )
        )
    for contender in ("pacore", FROZEN):
        ratio = paired(rows, "C", contender, "official", cpu)
        if not select(rows, "C", "official") or not ratio:
            continue
        suffix = "" if contender == "pacore" else f" ({contender})"
        main.append(
            [
                f"C: A at zero latency: CPU ms per trajectory{suffix}",
                median_range(values(rows, "C", "official", "cpu_ms_per_trajectory")),
                median_range(values(rows, "C", contender, "cpu_ms_per_trajectory")),
                median_range(ratio),
            ]
        )
        goals.append(
            Goal(
                f"C: CPU per trajectory <= 1.5 x the official's{suffix}",
                med(ratio),
                1.5,
                median_range(ratio) + " x",
            )
        )
    alone = []
    small, large = sizes.dispatch_k
    d_small = select(rows, "dispatch", "pacore", k=small)
    if d_small:
        d_large = {r["rep"]: r for r in select(rows, "dispatch", "pacore", k=large)}
        ratio = [
            d_large[r["rep"]]["ms_per_trajectory"] / r["ms_per_trajectory"]
            for r in d_small
            if r["rep"] in d_large
        ]
        for k, rs in ((small, d_small), (large, list(d_large.values()))):
            alone.append(
                [
                    f"dispatch: one round of K={k:,} (+1), fake model: ms per trajectory",
                    median_range([r["ms_per_trajectory"] for r in rs]),
                    f"{med([r['wall_s'] for r in rs]) or 0:.2f} s a round",
                ]
            )
        alone.append(
            [f"dispatch: per trajectory at K={large:,} / at K={small:,}", median_range(ratio), ""]
        )
        goals.append(
            Goal(
                f"dispatch linear: per trajectory at K={large:,} <= 1.5 x at K={small:,}",
                med(ratio),
                1.5,
                median_range(ratio) + " x",
            )
        )
    if select(rows, "A", "pacore + Redis"):
        over = [x - 1 for x in paired(rows, "A", "pacore + Redis", "pacore", wall)]
        saved = select(rows, "A", "pacore + Redis")
        per_reply = [
            r["redis_bytes_per_trajectory"] / r["content_bytes_per_trajectory"]
            for r in saved
            if r["content_bytes_per_trajectory"]
        ]
        alone += [
            ["redis: A's wall with AsyncRedisSaver over none, - 1", median_range(over), ""],
            [
                "redis: bytes stored per trajectory",
                median_range([r["redis_bytes_per_trajectory"] for r in saved], 0),
                f"reply {med([r['content_bytes_per_trajectory'] for r in saved]) or 0:,.0f} B",
            ],
            [
                "redis: bytes stored per trajectory beyond its reply",
                median_range(
                    [
                        r["redis_bytes_per_trajectory"] - r["content_bytes_per_trajectory"]
                        for r in saved
                    ],
                    0,
                ),
                "",
            ],
            ["redis: stored / reply bytes per trajectory", median_range(per_reply), ""],
        ]
        goals += [
            Goal(
                "redis: wall <= 3% over no saver at A",
                med(over),
                0.03,
                median_range([100 * x for x in over], 1, "%"),
            ),
            Goal(
                "redis: bytes per trajectory <= 2 x the reply's",
                med(per_reply),
                2.0,
                median_range(per_reply) + " x",
            ),
        ]
    scale, scale_goals = summarize_scale(rows, sizes)
    goals += scale_goals
    mismatched = []
    for r in rows:
        if r["contender"] == "official":
            twin = select(rows, r["workload"], "pacore", rep=r["rep"])
            if twin and twin[0]["draws"] != r["draws"]:
                mismatched.append(f"{r['workload']} #{r['rep'] + 1}")
    compared = sum(1 for r in rows if r["contender"] == "official")
    return {
        "main": main,
        "alone": alone,
        "scale": scale,
        "goals": goals,
        "prompts_compared": compared,
        "prompts_mismatched": mismatched,
    }


def summarize_scale(rows: list[dict[str, Any]], sizes: Sizes) -> tuple[list[list], list[Goal]]:
    """Issue 25's table: per N and contender, wall, CPU, peak RSS, full collections, wall per
    trajectory, and ratios to the official run of the same repeat; and the goals at the
    largest N."""

    def wall(r: dict[str, Any]) -> float:
        return float(r["wall_s"])

    def rss(r: dict[str, Any]) -> float:
        return float(r["rss_peak_mb"])

    def per_traj(r: dict[str, Any]) -> float:
        return 1000 * float(r["wall_s"]) / max(1, r["trajectories"])

    def cpu(r: dict[str, Any]) -> float:  # what a shared machine's load changes least
        return float(r["cpu_ms_per_trajectory"])

    table_rows: list[list] = []
    goals: list[Goal] = []
    contenders = ("official", "pacore", FROZEN, "pacore + Redis", FROZEN_REDIS)
    for n in sizes.scale_problems:
        workload = f"scale N={n}"
        for c in contenders:
            runs = select(rows, workload, c)
            if not runs:
                continue

            def vs(value: Callable[[dict[str, Any]], float], w: str = workload, c: str = c) -> str:
                if c == "official":
                    return ""
                return median_range(paired(rows, w, c, "official", value))

            table_rows.append(
                [
                    f"{n} ({runs[0]['expected_trajectories']:,})",
                    c,
                    median_range([wall(r) for r in runs], 2),
                    median_range([r["cpu_s"] for r in runs], 2),
                    median_range([rss(r) for r in runs], 0),
                    median_range([r["gc_collections"][2] for r in runs if r["gc_collections"]], 0),
                    median_range([r["gc_cpu_s"] or 0 for r in runs], 2),
                    median_range([per_traj(r) for r in runs], 3),
                    median_range([cpu(r) for r in runs], 3),
                    vs(wall),
                    vs(cpu),
                    vs(rss),
                ]
            )
    small, large = f"scale N={min(sizes.scale_problems)}", f"scale N={max(sizes.scale_problems)}"
    for c in ("pacore", FROZEN):
        suffix = "" if c == "pacore" else f" ({c})"
        ratio = paired(rows, large, c, "official", wall)
        if ratio:
            goals.append(Goal(f"{large}: wall <= 1.5 x the official's{suffix}", med(ratio), 1.5,
                              median_range(ratio) + " x"))  # fmt: skip
        memory = paired(rows, large, c, "official", rss)
        if memory:
            goals.append(Goal(f"{large}: peak RSS <= 2 x the official's{suffix}", med(memory),
                              2.0, median_range(memory) + " x"))  # fmt: skip
        for name, value in (("wall", per_traj), ("CPU", cpu)):
            growth = []
            for x in select(rows, large, c):
                y = select(rows, small, c, rep=x["rep"])
                if y:
                    growth.append(value(x) / value(y[0]))
            if growth:
                goals.append(Goal(f"{name} per trajectory at {large} <= 1.2 x at {small}{suffix}",
                                  med(growth), 1.2, median_range(growth) + " x"))  # fmt: skip
        by_cpu = paired(rows, large, c, "official", cpu)
        if by_cpu:
            goals.append(Goal(f"{large}: CPU <= 1.5 x the official's{suffix}", med(by_cpu), 1.5,
                              median_range(by_cpu) + " x"))  # fmt: skip
    for with_redis, without, suffix in (
        ("pacore + Redis", "pacore", ""),
        (FROZEN_REDIS, FROZEN, " (the CLI's GC)"),
    ):
        for name, value in (("wall", wall), ("CPU", cpu)):
            redis = paired(rows, large, with_redis, without, value)
            if redis:
                goals.append(Goal(f"{large}: {name} with Redis <= 1.3 x without a saver{suffix}",
                                  med(redis), 1.3, median_range(redis) + " x"))  # fmt: skip
    return table_rows, goals


def render(info: dict[str, Any], summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# PaCoRe-graph beside the official PaCoRe pipeline",
        "",
        machine_line(info),
        f"`{info['command']}`; {info['repeats']} repeats, contenders alternating; "
        "median (range) of the repeats; ratios are of runs of the same repeat.",
        "",
    ]
    if summary["main"]:
        lines += table(
            ["workload", "official", "pacore", "pacore / official"], summary["main"], "lrrr"
        )
        lines.append("")
    if summary["alone"]:
        lines += table(["pacore alone", "measured", ""], summary["alone"], "lrr")
        lines.append("")
    if summary["scale"]:
        lines += table(
            ["N problems (trajectories)", "contender", "wall s", "CPU s", "peak RSS MB",
             "full GCs", "GC CPU s", "wall ms / traj", "CPU ms / traj", "wall / official",
             "CPU / official", "RSS / official"],
            summary["scale"],
            "llrrrrrrrrrr",
        )  # fmt: skip
        lines.append("")
    if summary["goals"]:
        lines += table(
            ["goal", "measured", "result"],
            [[g.goal, g.shown, g.met] for g in summary["goals"]],
            "lrl",
        )
        lines.append("")
    if summary["prompts_compared"]:
        bad = summary["prompts_mismatched"]
        lines.append(
            f"Prompts: in {summary['prompts_compared']} official runs, "
            + (
                f"the pacore run of the same repeat sent DIFFERENT prompts: {', '.join(bad)}."
                if bad
                else "the pacore run of the same repeat sent the same prompts in the same "
                "groups and met the same latency draws (server log)."
            )
        )
        lines.append("")
    lines += [
        "wall = first call issued .. last problem solved, in the client process (the official "
        "pipeline's includes writing its results.jsonl, as its users get it); ideal = the sum "
        "over rounds of the slowest call, from the server's log of the same run. CPU = the "
        "client process' user + system time over the measured window. RSS growth = peak "
        "resident memory during the run minus before it, over the trajectories in flight. "
        "dispatch: wall of one run of [K] (+1) on langchain_core's FakeListChatModel, no HTTP. "
        "redis: AsyncRedisSaver with durability='sync' (as the CLI); bytes = key names + fields "
        "+ values of every key but the warm-up's; reply = a trajectory's content bytes (about "
        "1.8 KB at A, as in the issue; a real trajectory's reply is KBs to 100s of KB, so the "
        "overhead beyond the reply is the number that carries over).",
        "",
        "## Every run",
        "",
    ]
    detail = []
    for r in rows:
        detail.append(
            [
                r["workload"] + (f" K={r['k']:,}" if "k" in r else ""),
                r["contender"],
                r["rep"] + 1,
                r["trajectories"],
                fmt(r.get("ideal_s"), 2),
                fmt(r["wall_s"], 3),
                fmt(r.get("wall_over_ideal"), 3),
                fmt(r["cpu_ms_per_trajectory"], 3),
                fmt(r["rss_growth_kb"] / 1024, 1),
                fmt(r.get("round_gap_ms_max"), 0),
                f"{r.get('others_cpu_pct', 0):.0f}%",
                f"{r['load_before']:.2f}",
                r["n_errors"],
            ]
        )
    lines += table(
        [
            "workload",
            "contender",
            "#",
            "traj",
            "ideal s",
            "wall s",
            "wall/ideal",
            "CPU ms/traj",
            "RSS +MB",
            "round gap ms (max)",
            "others' CPU",
            "load",
            "errors",
        ],
        detail,
        "llrrrrrrrrrrr",
    )
    for r in rows:
        if "redis_bytes_by_channel" in r and r["rep"] == 0:
            n = max(1, r["trajectories"])
            parts = ", ".join(
                f"{name} {value / n:,.0f}"
                for name, value in list(r["redis_bytes_by_channel"].items())[:6]
            )
            lines += ["", f"Redis bytes per trajectory by channel (repeat 1): {parts}."]
    for r in rows:
        if "profile_summary" in r:
            lines += [
                "",
                *render_profile(
                    f"pacore at C ({r['trajectories']} trajectories)", r["profile_summary"]
                ),
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help=f"comma-separated workloads of {', '.join(WORKLOADS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads: a smoke run")
    parser.add_argument(
        "--official", default=None, help="the official PaCoRe extract (default $PACORE_OFFICIAL)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="default 3, --quick 1")
    parser.add_argument("--name", default="", help="stem of the result files")
    parser.add_argument("--out", default=str(RESULTS), help="directory of the result files")
    args = parser.parse_args(argv)
    by_lower = {w.lower(): w for w in WORKLOADS}
    asked = [s.strip().lower() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in asked if s not in by_lower]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}: choose from {', '.join(WORKLOADS)}")
    default = set(WORKLOADS) - {"scale"}  # ~10 min more: asked for by name
    only = {by_lower[s] for s in asked} or default
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    needs_official = bool(only & {"A", "B", "C", "scale"})
    official = official_dir(args.official) if needs_official else Path()
    sizes = Sizes.of(args.quick)
    info = run_info(
        command="python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        quick=args.quick,
        repeats=repeats,
        only=sorted(only),
        sizes=sizes.__dict__,
        official=str(official) if needs_official else None,
    )
    bench = Bench(official, Path(), {})
    with tempfile.TemporaryDirectory() as tmp:
        bench.tmp = Path(tmp)
        try:
            if only & {"redis", "scale"}:
                bench.redis = Redis(tmp)
            rows = run_all(bench, only, sizes, repeats)
        finally:
            for sim in bench.sims.values():
                sim.stop()
            if bench.redis is not None:
                bench.redis.stop()
    info["load_after"] = loadavg()
    summary = summarize(rows, sizes)
    text = render(info, summary, rows)
    print(text)
    stem = args.name or (
        "pacore_vs_official"
        + ("_quick" if args.quick else "")
        + ("" if only == default else "_" + "_".join(sorted(only)))
    )
    goals = [{"goal": g.goal, "measured": g.measured, "result": g.met} for g in summary["goals"]]
    for r in rows:
        r.pop("draws", None)  # compared above; thousands of tuples are not worth keeping
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = write_results(
        stem,
        {**info, "table": summary["main"], "alone": summary["alone"], "goals": goals,
         "prompts_mismatched": summary["prompts_mismatched"], "rows": rows},
        text,
        out,
    )  # fmt: skip
    print(f"\nwritten: {path}.md, .json", file=sys.stderr)
    failed = any(r["n_errors"] for r in rows) or summary["prompts_mismatched"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
