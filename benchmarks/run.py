"""Orchestration overhead of the PaCoRe graph against a simulated backend with known latency.

A round cannot end before its slowest trajectory, so for one problem the ideal wall
time is the sum over rounds of the slowest trajectory's latency; for problems run
at once, the largest of those sums. The simulated server (``simserver.py``) draws
each call's latency from a seed and logs it, so the ideal of every run is computed
exactly from the log of that same run; wall / ideal is what the orchestration adds.

    P1  K=[32,4] (+ final 1), 16 problems at once, 2-8 s trajectories:
        wall/ideal <= 1.03 and not slower than the asyncio reference pipeline
    P2  1 problem at K=[256,16]; 64 problems at K=[16] (1,024 trajectories in flight):
        wall/ideal <= 1.10; peak RSS, and its growth from 256 to 1,024 trajectories
    P3  P1's workload checkpointed: none / InMemorySaver / AsyncRedisSaver on a local
        redis-server: Redis <= 10% wall over none; bytes in Redis per trajectory
    P4  a zero-latency server: orchestration cost per trajectory (ms), with a cProfile
        summary of where it goes

Every scenario runs in a fresh interpreter (``workload.py``); the server runs in its
own process on uvloop. The graph runs each problem as one ``ainvoke`` under
``asyncio.gather`` with one model instance (one connection pool), max_concurrency =
the problem's largest K, ``durability="sync"`` with a saver (as the CLI does). The
asyncio reference gets one semaphore as large as the workload's largest round, so
neither contender is throttled.

Rows marked "+ proposed diffs" apply, inside the workload process only, two changes to
files outside this benchmark's remit (``workload.experiment``): the trajectory node built
as LangGraph's ``RunnableCallable`` instead of a ``RunnableLambda``, and ``gc.freeze()``
after the imports, as ``pacore solve`` would do.

    python benchmarks/run.py                # everything (~8 minutes)
    python benchmarks/run.py --only P1,P3   # a subset
    python benchmarks/run.py --quick        # smaller and shorter: a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))


# -- machine and load --------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "langgraph": version("langgraph"),
        "openai": version("openai"),
        "httpx": version("httpx"),
        "aiohttp": version("aiohttp"),
        "redis_py": version("redis"),
    }


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- processes -----------------------------------------------------------------------


class Sim:
    """The simulated server in its own process."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "simserver.py"), "--config", json.dumps(config)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the simulated server did not start")
        self.port = json.loads(line)["port"]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def _call(self, path: str, data: dict | None = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST" if data is not None else "GET",
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def reset(self, latency_scale: float) -> None:
        self._call("/sim/reset", {"latency_scale": latency_scale})

    def log(self) -> list[dict[str, Any]]:
        return self._call("/sim/log")

    def stats(self) -> dict[str, Any]:
        return self._call("/sim/stats")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Redis:
    """A private redis-server on a free loopback port, persistence off."""

    def __init__(self, directory: str) -> None:
        import redis

        from pacore_graph.testing import RedisNotInstalledError, RedisServer

        try:
            self.server = RedisServer(Path(directory))
        except RedisNotInstalledError as exc:
            raise SystemExit(str(exc)) from None
        self.server.start()
        self.port, self.url = self.server.port, self.server.url
        self.client = redis.Redis(port=self.port)

    def cpu_s(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def stored_bytes(self) -> tuple[int, int, dict[str, int]]:
        """(bytes of key names + fields + values, MEMORY USAGE, value bytes by channel)
        over every key but the warm-up run's."""
        stored = memory = 0
        channels: dict[str, int] = defaultdict(int)
        for key in self.client.scan_iter(count=1000):
            if b"warmup" in key:
                continue
            kind = self.client.type(key)
            if kind == b"hash":
                items = self.client.hgetall(key).items()
                body = sum(len(f) + len(v) for f, v in items)
                for fld, value in items:
                    if key.endswith(b":writes"):  # task_path NUL channel NUL value
                        channels[value.split(b"\x00", 2)[1].decode()] += len(value)
                    elif key.endswith(b":blobs"):  # field: ns NUL channel NUL version
                        channels[fld.split(b"\x00")[1].decode()] += len(value)
                    else:
                        channels["(checkpoints, metadata)"] += len(fld) + len(value)
            elif kind == b"zset":
                body = sum(len(m) for m in self.client.zrange(key, 0, -1))
            else:
                body = len(self.client.dump(key) or b"")
            stored += len(key) + body
            memory += self.client.memory_usage(key, samples=0) or 0
        return stored, memory, dict(sorted(channels.items(), key=lambda kv: -kv[1]))

    def stop(self) -> None:
        self.client.close()
        self.server.kill()


# -- scenarios -----------------------------------------------------------------------


@dataclass
class Scenario:
    bench: str
    name: str
    kind: str  # graph | asyncio
    problems: int
    rounds: list[int]
    saver: str = "none"
    latency_scale: float = 1.0
    profile: bool = False
    target: str = ""
    compare_to: str | None = None  # name of the scenario whose wall this one is held to
    extra: dict[str, Any] = field(default_factory=dict)
    lease: bool = False  # each problem holds its thread's lease (fenced writes), as the CLI

    @property
    def key(self) -> str:
        return f"{self.bench}:{self.name}"

    @property
    def trajectories(self) -> int:
        return self.problems * (sum(self.rounds) + 1)


DIFFS = {"patch_node": True, "gc": "freeze"}
"""The proposed changes outside this benchmark's reach, applied in the workload process:
the trajectory node built as LangGraph's RunnableCallable (pacore_graph/nodes/trajectory.py)
and gc.freeze() once the imports are done (pacore_graph/cli.py). See workload.experiment."""


def scenarios(quick: bool) -> list[Scenario]:
    n1 = 4 if quick else 16
    scale = 0.25 if quick else 1.0
    big = [64, 8] if quick else [256, 16]
    many = [(4, 16), (16, 16)] if quick else [(16, 16), (32, 16), (64, 16)]
    p1 = dict(latency_scale=scale, target="wall/ideal <= 1.03, <= asyncio")
    out = [
        Scenario("P1", "asyncio reference", "asyncio", n1, [32, 4], latency_scale=scale),
        Scenario("P1", "graph", "graph", n1, [32, 4], **p1),
        Scenario("P1", "graph + proposed diffs", "graph", n1, [32, 4], extra=DIFFS, **p1),
        Scenario(
            "P2",
            f"1 problem K={big}",
            "graph",
            1,
            big,
            latency_scale=scale,
            target="wall/ideal <= 1.10",
        ),
    ]
    for n, k in many:
        out.append(
            Scenario(
                "P2",
                f"{n} problems K=[{k}] ({n * k} in flight)",
                "graph",
                n,
                [k],
                latency_scale=scale,
                target="wall/ideal <= 1.10",
            )
        )
    n, k = many[-1]
    out.append(
        Scenario(
            "P2",
            f"{n} problems K=[{k}] + proposed diffs",
            "graph",
            n,
            [k],
            latency_scale=scale,
            target="wall/ideal <= 1.10",
            extra=DIFFS,
        )
    )
    out += [
        Scenario("P3", "no checkpointer", "graph", n1, [32, 4], latency_scale=scale),
        Scenario("P3", "InMemorySaver", "graph", n1, [32, 4], saver="memory", latency_scale=scale),
        Scenario(
            "P3",
            "AsyncRedisSaver",
            "graph",
            n1,
            [32, 4],
            saver="redis",
            latency_scale=scale,
            target="<= 1.10 x no checkpointer",
            compare_to="P3:no checkpointer",
        ),
    ]
    zero = dict(latency_scale=0.0)
    out += [
        Scenario("P4", "asyncio reference, 0 latency", "asyncio", n1, [32, 4], **zero),
        Scenario("P4", "graph, no checkpointer, 0 latency", "graph", n1, [32, 4], **zero),
        Scenario(
            "P4", "graph, InMemorySaver, 0 latency", "graph", n1, [32, 4], saver="memory", **zero
        ),
        Scenario(
            "P4", "graph, AsyncRedisSaver, 0 latency", "graph", n1, [32, 4], saver="redis", **zero
        ),
        Scenario(
            "P4",
            "graph, AsyncRedisSaver + lease, 0 latency",
            "graph",
            n1,
            [32, 4],
            saver="redis",
            lease=True,
            **zero,
        ),
        Scenario(
            "P4",
            "graph, InMemorySaver, 0 latency, + proposed diffs",
            "graph",
            n1,
            [32, 4],
            saver="memory",
            extra=DIFFS,
            **zero,
        ),
        Scenario(
            "P4",
            "profile: InMemorySaver",
            "graph",
            n1,
            [32, 4],
            saver="memory",
            profile=True,
            **zero,
        ),
        Scenario(
            "P4",
            "profile: AsyncRedisSaver",
            "graph",
            n1,
            [32, 4],
            saver="redis",
            profile=True,
            **zero,
        ),
    ]
    return out


# -- analysis ------------------------------------------------------------------------


def analyze(log: list[dict[str, Any]], result: dict[str, Any]) -> dict[str, Any]:
    """Ideal time from the server's log, and where the time above it went."""
    t0 = result["t0"]
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for entry in log:
        if entry["received"] < t0:  # the warm-up run
            continue
        groups[(entry["problem"], entry["group"])].append(entry)
    per_problem: dict[int, list[list[dict]]] = defaultdict(list)
    for (problem, _), entries in groups.items():
        per_problem[problem].append(entries)
    ideals, overheads, starts, gaps, spreads, late, ends = [], [], [], [], [], [], []
    for problem, rounds in per_problem.items():
        rounds.sort(key=lambda es: min(e["received"] for e in es))
        ideal = sum(max(e["latency"] for e in es) for es in rounds)
        ideals.append(ideal)
        starts.append(min(e["received"] for e in rounds[0]) - t0)
        for es in rounds:
            first = min(e["received"] for e in es)
            spreads.append(max(e["received"] for e in es) - first)
            late += [e["sent"] - e["received"] - e["latency"] for e in es if e["sent"]]
        for a, b in itertools.pairwise(rounds):
            gaps.append(min(e["received"] for e in b) - max(e["sent"] for e in a))
        if 0 <= problem < len(result["finished"]) and result["finished"][problem]:
            finish = result["finished"][problem] - t0
            overheads.append(finish - ideal)
            ends.append(result["finished"][problem] - max(e["sent"] for e in rounds[-1]))
    ideal = max(ideals, default=0.0)

    def ms(values: list[float], fn=max) -> float | None:
        return round(fn(values) * 1000, 2) if values else None

    return {
        "requests": sum(1 for e in log if e["received"] >= t0),
        "ideal_s": ideal,
        "problem_overhead_ms_mean": ms(overheads, statistics.fmean),
        "problem_overhead_ms_max": ms(overheads),
        "start_lag_ms_min": ms(starts, min),
        "start_lag_ms_max": ms(starts),
        "round_gap_ms_mean": ms(gaps, statistics.fmean),
        "round_gap_ms_max": ms(gaps),
        "dispatch_spread_ms_max": ms(spreads),
        "server_late_ms_max": ms(late),
        "end_lag_ms_max": ms(ends),
    }


PACKAGES = (
    ("pacore_graph", "pacore_graph"),
    ("langgraph", "langgraph"),
    ("langchain_core", "langchain_core"),
    ("openai", "openai"),
    ("httpcore", "httpx/httpcore"),
    ("httpx", "httpx/httpcore"),
    ("httpcore2", "httpx/httpcore"),
    ("httpx2", "httpx/httpcore"),
    ("aiohttp", "aiohttp"),
    ("yarl", "aiohttp"),
    ("multidict", "aiohttp"),
    ("redis", "redis-py"),
    ("email", "email (header parsing)"),
    ("inspect", "inspect (signature checks)"),
    ("h11", "h11"),
    ("anyio", "anyio"),
    ("pydantic", "pydantic"),
    ("ormsgpack", "ormsgpack"),
    ("asyncio", "asyncio"),
    ("uuid", "uuid"),
    ("json", "json"),
    ("copy", "copy"),
    ("typing", "typing"),
    ("contextvars", "contextvars"),
)


def package(filename: str) -> str:
    if filename.startswith("~"):
        return "C builtins"
    if filename.startswith("<frozen "):
        return filename.strip("<>").split()[-1]
    for needle, name in PACKAGES:
        if f"/{needle}/" in filename or filename.endswith(f"/{needle}.py"):
            return name
    return "other"


def profile_summary(path: str, top: int = 25) -> dict[str, Any]:
    stats = pstats.Stats(path)
    total = stats.total_tt
    by_package: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        by_package[package(filename)] += tottime
        rows.append((cumtime, tottime, ncalls, f"{_short(filename)}:{line}({func})"))
    rows.sort(reverse=True)
    cumulative = [
        {"cum_s": round(c, 3), "own_s": round(t, 3), "calls": n, "function": f}
        for c, t, n, f in rows
        if not f.startswith(("asyncio/", "<")) and "gather" not in f
    ][:top]
    own = sorted(rows, key=lambda r: r[1], reverse=True)[:top]
    return {
        "total_s": round(total, 3),
        "by_package": {
            k: round(v, 3) for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])
        },
        "top_cumulative": cumulative,
        "top_own": [
            {"own_s": round(t, 3), "cum_s": round(c, 3), "calls": n, "function": f}
            for c, t, n, f in own
        ],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return filename


# -- running -------------------------------------------------------------------------


def run_scenario(
    sc: Scenario, sim: Sim, redis: Redis | None, run_id: str, tmp: str, model_kwargs: dict
) -> dict[str, Any]:
    sim.reset(sc.latency_scale)
    if redis is not None:
        redis.client.flushall()
    spec: dict[str, Any] = {
        "kind": sc.kind,
        "base_url": sim.base_url,
        "problems": sc.problems,
        "rounds": sc.rounds,
        "saver": sc.saver,
        "redis_url": redis.url if redis else None,
        "max_concurrency": max(sc.rounds),
        "semaphore": sc.problems * max(sc.rounds),
        "run_id": run_id,
        "model_kwargs": model_kwargs,
        "lease": sc.lease,
        **sc.extra,
    }
    if sc.profile:
        spec["profile"] = os.path.join(tmp, f"{sc.bench}-{sc.saver}.prof")
    server0 = sim.stats()["cpu_s"]
    redis0 = redis.cpu_s() if redis else 0.0
    load0 = loadavg()
    proc = subprocess.run(
        [sys.executable, str(HERE / "workload.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{sc.key} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    stats = sim.stats()
    server_cpu = stats["cpu_s"] - server0
    redis_cpu = (redis.cpu_s() - redis0) if redis else 0.0
    log = sim.log()
    row: dict[str, Any] = {
        "bench": sc.bench,
        "scenario": sc.name,
        "kind": sc.kind,
        "saver": sc.saver,
        "problems": sc.problems,
        "round_vector": [*sc.rounds, 1],
        "latency_scale": sc.latency_scale,
        "trajectories": result["trajectories"],
        "expected_trajectories": sc.trajectories,
        "wall_s": result["wall_s"],
        "client_cpu_s": result["cpu_s"],
        "client_cpu_ms_per_trajectory": 1000 * result["cpu_s"] / max(1, result["trajectories"]),
        "wall_ms_per_trajectory": 1000 * result["wall_s"] / max(1, result["trajectories"]),
        "warmup_s": result.get("warmup_s"),
        "rss_baseline_mb": result["rss_baseline"] / 2**20,
        "rss_peak_mb": result["rss_peak"] / 2**20,
        "rss_growth_mb": (result["rss_peak"] - result["rss_baseline"]) / 2**20,
        "server_cpu_s": server_cpu,
        "server_max_in_flight": stats["max_in_flight"],
        "server_connections": stats["connections"],
        "redis_cpu_s": redis_cpu,
        "errors": result["errors"],
        "n_errors": result["n_errors"],
        "target": sc.target,
        "compare_to": sc.compare_to,
        "load_before": load0,
        "load_after": loadavg(),
        "profile": bool(sc.profile),
        "diffs": bool(sc.extra),
    }
    # Machine CPU in the measured window that was neither ours, the server's nor Redis'.
    others = result["machine_busy_s"] - result["cpu_s"] - server_cpu - redis_cpu
    if result["machine_total_s"] > 0:
        row["others_cpu_pct"] = round(100 * max(0.0, others) / result["machine_total_s"], 1)
    row.update(analyze(log, result))
    if sc.latency_scale > 0 and row["ideal_s"] > 0:
        row["wall_over_ideal"] = row["wall_s"] / row["ideal_s"]
    if redis is not None and sc.saver == "redis" and sc.bench == "P3":
        stored, memory, channels = redis.stored_bytes()
        row["redis_stored_bytes"] = stored
        row["redis_memory_bytes"] = memory
        row["redis_bytes_by_channel"] = channels
        row["redis_bytes_per_trajectory"] = stored / max(1, result["trajectories"])
        row["content_bytes_per_trajectory"] = result["content_bytes"] / max(
            1, result["trajectories"]
        )
    if sc.profile:
        row["profile_summary"] = profile_summary(spec["profile"])
    return row


def check(row: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    """pass / FAIL against the row's target, '' when it has none."""
    if row.get("n_errors"):
        return "FAIL (errors)"
    ok = True
    if row["bench"] == "P1" and row["kind"] == "graph":
        ok = row.get("wall_over_ideal", 9) <= 1.03
        ref = rows.get("P1:asyncio reference")
        if ref:
            row["vs_asyncio"] = row["wall_s"] / ref["wall_s"]
            ok = ok and row["wall_s"] <= ref["wall_s"]
    elif row["bench"] == "P2":
        ok = row.get("wall_over_ideal", 9) <= 1.10
    elif row["compare_to"]:
        base = rows.get(row["compare_to"])
        if base is None:
            return ""
        row["vs_base"] = row["wall_s"] / base["wall_s"]
        ok = row["vs_base"] <= 1.10
    else:
        return ""
    return "pass" if ok else "FAIL"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        "# Orchestration overhead against a simulated backend",
        "",
        f"{info['date']}; machine: {info['machine']['cpu']}, {info['machine']['cpus']} CPUs, "
        f"{info['machine']['platform']}; Python {info['machine']['python']}, "
        f"langgraph {info['machine']['langgraph']}, openai {info['machine']['openai']}, "
        f"httpx {info['machine']['httpx']}. Load average {info['load_before']:.2f} before, "
        f"{info['load_after']:.2f} after{'; --quick' if info['quick'] else ''}.",
        "",
        "| id | scenario | traj | ideal s | wall s | wall/ideal | vs ref | overhead ms "
        "(mean/max per problem) | round gap ms (max) | CPU ms/traj | peak RSS MB (+run) "
        "| others' CPU | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        vs = row.get("vs_asyncio") or row.get("vs_base")
        overhead = ""
        if row.get("problem_overhead_ms_mean") is not None and row["latency_scale"] > 0:
            overhead = (
                f"{row['problem_overhead_ms_mean']:,.0f} / {row['problem_overhead_ms_max']:,.0f}"
            )
        wall = fmt(row["wall_s"], 2)
        if row["latency_scale"] == 0:
            wall += f" ({row['wall_ms_per_trajectory']:.2f} ms/traj)"
        lines.append(
            "| "
            + " | ".join(
                [
                    row["bench"],
                    row["scenario"],
                    fmt(row["trajectories"]),
                    fmt(row.get("ideal_s"), 2) if row["latency_scale"] > 0 else "0",
                    wall,
                    fmt(row.get("wall_over_ideal"), 3),
                    fmt(vs, 3),
                    overhead,
                    fmt(row.get("round_gap_ms_max"), 0) if row["latency_scale"] > 0 else "",
                    fmt(row["client_cpu_ms_per_trajectory"], 2),
                    f"{row['rss_peak_mb']:.0f} (+{row['rss_growth_mb']:.0f})",
                    f"{row.get('others_cpu_pct', 0):.0f}%",
                    row.get("result", ""),
                ]
            )
            + " |"
        )
    lines += ["", *notes(rows)]
    return "\n".join(lines)


def notes(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "ideal = max over problems of (sum over rounds of the slowest call's drawn latency), "
        "from the server's log of the same run; wall = first call issued .. last answer, "
        "in the client. overhead = a problem's finish time minus its own ideal. round gap = "
        "last answer of round r .. first call of round r+1 reaching the server. CPU ms/traj "
        "= client process CPU / trajectories. others' CPU = machine CPU used by other "
        "processes during the scenario (the box is shared). + proposed diffs: the "
        "trajectory node as LangGraph's RunnableCallable and gc.freeze() after imports, "
        "applied in the workload process (benchmarks/workload.py, experiment()).",
    ]
    p2 = [r for r in rows if r["bench"] == "P2" and r["problems"] > 1 and not r["diffs"]]
    if len(p2) >= 2:
        a, b = p2[0], p2[-1]
        slope = (b["rss_growth_mb"] - a["rss_growth_mb"]) / max(
            1, b["trajectories"] - a["trajectories"]
        )
        out.append(
            "Memory (P2): peak RSS growth during the run "
            + ", ".join(f"{r['trajectories']:,} traj +{r['rss_growth_mb']:.0f} MB" for r in p2)
            + f"; about {slope * 1024:.0f} KB more per extra trajectory."
        )
    for r in rows:
        if "redis_bytes_per_trajectory" in r:
            n = max(1, r["trajectories"])
            parts = ", ".join(
                f"{name} {value / n:,.0f}"
                for name, value in list(r["redis_bytes_by_channel"].items())[:5]
            )
            out.append(
                f"Redis (P3): {r['redis_stored_bytes']:,} bytes stored for "
                f"{r['trajectories']} trajectories = {r['redis_bytes_per_trajectory']:,.0f} "
                f"bytes per trajectory, whose own reply is {r['content_bytes_per_trajectory']:,.0f}"
                f" bytes; per trajectory by channel: {parts}. MEMORY USAGE "
                f"{r['redis_memory_bytes']:,}; redis-server CPU {r['redis_cpu_s']:.2f} s."
            )
    server = [r for r in rows if r["latency_scale"] > 0]
    if server:
        worst = max(server, key=lambda r: r.get("server_late_ms_max") or 0)
        busiest = max(rows, key=lambda r: r["server_cpu_s"] / max(r["wall_s"], 1e-9))
        out.append(
            f"Simulated server: at most {worst.get('server_late_ms_max', 0):.1f} ms late on any "
            f"reply; busiest at {100 * busiest['server_cpu_s'] / busiest['wall_s']:.0f}% of "
            f"one core ({busiest['bench']} {busiest['scenario']})."
        )
    return out


def render_profiles(rows: list[dict[str, Any]]) -> str:
    out = []
    for row in rows:
        summary = row.get("profile_summary")
        if not summary:
            continue
        out += [
            "",
            f"## Profile: {row['scenario']} ({row['trajectories']} trajectories, "
            f"{summary['total_s']:.2f} s profiled CPU)",
            "",
            "Own time by package:",
            "",
            "| package | own s | share |",
            "|---|---:|---:|",
        ]
        for name, secs in summary["by_package"].items():
            if secs >= 0.005 * summary["total_s"]:
                out.append(f"| {name} | {secs:.3f} | {100 * secs / summary['total_s']:.1f}% |")
        out += [
            "",
            "Top functions by cumulative time:",
            "",
            "| cum s | own s | calls | function |",
            "|---:|---:|---:|---|",
        ]
        for r in summary["top_cumulative"]:
            out.append(
                f"| {r['cum_s']:.3f} | {r['own_s']:.3f} | {r['calls']} | `{r['function']}` |"
            )
        out += [
            "",
            "Top functions by own time:",
            "",
            "| own s | cum s | calls | function |",
            "|---:|---:|---:|---|",
        ]
        for r in summary["top_own"]:
            out.append(
                f"| {r['own_s']:.3f} | {r['cum_s']:.3f} | {r['calls']} | `{r['function']}` |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark ids, e.g. P1,P3")
    parser.add_argument("--quick", action="store_true", help="fewer problems, 4x shorter calls")
    parser.add_argument("--name", default="", help="suffix of the result files")
    parser.add_argument(
        "--model-kwargs",
        default="{}",
        help="JSON of extra ChatOpenAICompatible fields (pool options)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    only = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    chosen = [s for s in scenarios(args.quick) if not only or s.bench in only]
    info: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "load_before": loadavg(),
        "sim": {"seed": args.seed, "rate_tok_s": 100.0, "latency_s": [2.0, 8.0]},
        "model_kwargs": json.loads(args.model_kwargs),
    }
    rows: list[dict[str, Any]] = []
    by_key: dict[str, dict[str, Any]] = {}
    needs_redis = any(s.saver == "redis" for s in chosen)
    sim = Sim({"seed": args.seed})
    with tempfile.TemporaryDirectory() as tmp:
        redis = Redis(tmp) if needs_redis else None
        try:
            for i, sc in enumerate(chosen):
                began = time.monotonic()
                row = run_scenario(sc, sim, redis, f"run{i}", tmp, info["model_kwargs"])
                row["result"] = check(row, by_key)
                rows.append(row)
                by_key[sc.key] = row
                print(
                    f"[{time.monotonic() - began:5.1f}s] {sc.key}: wall {row['wall_s']:.3f} s, "
                    f"ideal {row.get('ideal_s', 0):.3f} s, "
                    f"ratio {row.get('wall_over_ideal', 0):.4f}, "
                    f"cpu {row['client_cpu_ms_per_trajectory']:.2f} ms/traj, "
                    f"{row['trajectories']} traj {row['result']}",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            sim.stop()
            if redis is not None:
                redis.stop()
    info["load_after"] = loadavg()
    table = render(rows, info)
    profiles = render_profiles(rows)
    print(table)
    if profiles:
        print(profiles)
    RESULTS.mkdir(exist_ok=True)
    stem = (
        "orchestration" + (f"_{args.name}" if args.name else "") + ("_quick" if args.quick else "")
    )
    if only and not args.name:
        stem += "_" + "_".join(sorted(only))
    (RESULTS / f"{stem}.md").write_text(table + "\n" + profiles + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({**info, "rows": rows}, indent=2) + "\n")
    print(f"\nwritten: {RESULTS / stem}.md, .json", file=sys.stderr)
    return 0 if all(not r.get("result", "").startswith("FAIL") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
