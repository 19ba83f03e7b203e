"""The serve path against the library path, on the simulated server (``simserver.py``).

The same workload runs twice, each time from a fresh process against the same seeded
simulated backend, so both send byte-identical prompts and meet identical latencies:

- library: ``workload.py``'s graph run, each problem one ``ainvoke`` (what ``run.py`` P1
  and P4 measure);
- serve: ``pacore serve`` in its own process, each problem one ``POST
  /v1/chat/completions`` (model ``pacore-32x4``) from an aiohttp client here, all at once; plain
  JSON, and again streamed (SSE, the final round token by token).

Two workloads, as in ``run.py``: P1, 16 problems at K=[32, 4] (592 trajectories) with
2-8 s calls: wall time, and wall / ideal (the ideal from the server's log of the same
run); P4, the same at zero latency: CPU per trajectory (of the process running the
graph: the workload process, or the server process; the client's CPU is reported apart).
``--redis`` adds both paths checkpointed in Redis (the server with an Idempotency-Key
per request, the library on AsyncRedisSaver with ``durability="sync"``).

    python benchmarks/serve.py              # P1 and P4 (~3 minutes)
    python benchmarks/serve.py --quick      # 4 problems, calls 4x shorter
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from ideal import analyze  # noqa: E402
from report import loadavg, machine_line, median_range, run_info, table, write_results  # noqa: E402
from services import Redis, Sim  # noqa: E402
from workload import WARMUP, problem_text  # noqa: E402

from tests.servers import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def serve_process(sim: Sim, redis_url: str | None, log: Path) -> Iterator[tuple[str, int]]:
    """``pacore serve`` on the simulated backend, until the block ends: (URL, pid)."""
    port = free_port()
    command = [
        sys.executable, "-m", "pacore_graph.cli", "serve",
        "--base-url", sim.base_url, "--model", "sim", "--api-key", "sim",
        "--port", str(port), "--max-runs", "64", "--concurrency", "1024",
        "--log-level", "WARNING",
    ]  # fmt: skip
    if redis_url:
        command += ["--redis-url", redis_url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pacore serve exited:\n{log.read_text()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/health", timeout=1) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("pacore serve did not start")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _ask(
    session: Any, url: str, problem: str, model: str, stream: bool, key: str | None
) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": problem}], "stream": stream}
    headers = {"Idempotency-Key": key} if key else {}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        response.raise_for_status()
        if not stream:
            return (await response.json())["pacore"]["runs"][0]
        report: dict[str, Any] = {}
        async for raw in response.content:  # one SSE line at a time
            line = raw.decode()
            if line.startswith("data: {") and '"pacore"' in line:
                report = json.loads(line[6:])["pacore"]["runs"][0]
        return report


async def serve_workload(
    url: str, pid: int, problems: list[str], model: str, stream: bool, run_id: str | None
) -> dict[str, Any]:
    """Every problem as one request, all at once; timings as ``workload.py`` reports them.

    The client is aiohttp (the server's own upstream client): its cost per request is small,
    so the requests reach the server together, as ``asyncio.gather`` starts the library's
    problems together.
    """
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm = time.monotonic()
        key = f"{run_id}-warmup" if run_id else None
        await _ask(session, url, WARMUP, "pacore-2", stream, key)
        warm = time.monotonic() - warm
        finished = [0.0] * len(problems)
        counts = [0] * len(problems)

        async def one(i: int, text: str) -> None:
            key = f"{run_id}-{i}" if run_id else None
            report = await _ask(session, url, text, model, stream, key)
            finished[i] = time.monotonic()
            counts[i] = report["trajectories"]

        server0, client0 = process_cpu_s(pid), own_cpu_s()
        t0 = time.monotonic()
        outcomes = await asyncio.gather(
            *(one(i, p) for i, p in enumerate(problems)), return_exceptions=True
        )
        t1 = time.monotonic()
        server_cpu, client_cpu = process_cpu_s(pid) - server0, own_cpu_s() - client0
    errors = [f"{type(e).__name__}: {e}" for e in outcomes if isinstance(e, BaseException)]
    return {
        "t0": t0,
        "t1": t1,
        "wall_s": t1 - t0,
        "cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "warmup_s": warm,
        "finished": finished,
        "trajectories": sum(counts),
        "errors": errors[:5],
        "n_errors": len(errors),
    }


def library_workload(
    sim: Sim, rounds: list[int], n: int, saver: str, redis_url: str | None, run_id: str
) -> dict[str, Any]:
    spec = {
        "kind": "pacore",
        "base_url": sim.base_url,
        "problems": n,
        "rounds": rounds,
        "saver": saver,
        "redis_url": redis_url,
        "run_id": run_id,
    }
    proc = subprocess.run(
        [sys.executable, str(HERE / "workload.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the library workload failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["client_cpu_s"] = 0.0
    return result


def scenarios(quick: bool, redis: bool) -> list[dict[str, Any]]:
    n = 4 if quick else 16
    scale = 0.25 if quick else 1.0
    out = []
    for bench, latency in (("P1", scale), ("P4", 0.0)):
        out += [
            {"bench": bench, "path": "library", "latency": latency, "n": n},
            {"bench": bench, "path": "serve", "latency": latency, "n": n},
            {"bench": bench, "path": "serve, stream", "latency": latency, "n": n, "stream": True},
        ]
        if redis:
            out += [
                {"bench": bench, "path": "library + Redis", "latency": latency, "n": n,
                 "saver": "redis"},
                {"bench": bench, "path": "serve + Redis (Idempotency-Key)", "latency": latency,
                 "n": n, "saver": "redis"},
            ]  # fmt: skip
    return out


def aggregate(runs: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One row from a scenario's repetitions: at zero latency the run with the median CPU per
    trajectory, else the one with the median wall time; ``wall_vs_library`` is the median of
    the per-repetition ratios to the library path's run of the same repetition (runs of a
    repetition follow each other, so a change in the machine's load hits both alike)."""
    key = "cpu_ms_per_trajectory" if runs[0]["latency"] == 0 else "wall_s"
    row = dict(sorted(runs, key=lambda r: r[key])[len(runs) // 2])
    row["repeats_cpu_ms_per_trajectory"] = [r["cpu_ms_per_trajectory"] for r in runs]
    row["repeats_wall_s"] = [r["wall_s"] for r in runs]
    row["n_errors"] = sum(r["n_errors"] for r in runs)
    if base is not None and base is not runs:
        ratios = sorted(r["wall_s"] / b["wall_s"] for r, b in zip(runs, base, strict=False))
        row["repeats_wall_vs_library"] = ratios
        row["wall_vs_library"] = statistics.median(ratios)
    return row


def run_one(sc: dict[str, Any], sim: Sim, redis: Redis | None, tmp: Path, i: int) -> dict[str, Any]:
    rounds = [32, 4]
    sim.reset(sc["latency"])
    redis_url = None
    if sc.get("saver") == "redis":
        assert redis is not None
        redis.client.flushall()
        redis_url = redis.url
    problems = [problem_text(k) for k in range(sc["n"])]
    run_id = f"run{i}"
    load0 = loadavg()
    if sc["path"].startswith("library"):
        result = library_workload(sim, rounds, sc["n"], sc.get("saver", "none"), redis_url, run_id)
    else:
        with serve_process(sim, redis_url, tmp / f"serve{i}.log") as (url, pid):
            result = asyncio.run(
                serve_workload(
                    url, pid, problems, "pacore-32x4", bool(sc.get("stream")),
                    run_id if redis_url else None,
                )
            )  # fmt: skip
    row: dict[str, Any] = {
        **sc,
        "round_vector": [*rounds, 1],
        "trajectories": result["trajectories"],
        "wall_s": result["wall_s"],
        "cpu_ms_per_trajectory": 1000 * result["cpu_s"] / max(1, result["trajectories"]),
        "client_cpu_ms_per_trajectory": 1000
        * result["client_cpu_s"]
        / max(1, result["trajectories"]),
        "n_errors": result["n_errors"],
        "errors": result["errors"],
        "load_before": load0,
        "load_after": loadavg(),
    }
    row.update(analyze(sim.log(), result))
    if sc["latency"] > 0 and row["ideal_s"] > 0:
        row["wall_over_ideal"] = row["wall_s"] / row["ideal_s"]
    return row


def cpu_cell(row: dict[str, Any]) -> str:
    """The CPU per trajectory, with the spread of the repeats when there were some."""
    cell = f"{row['cpu_ms_per_trajectory']:.2f}"
    spread = row.get("repeats_cpu_ms_per_trajectory") or []
    if len(spread) > 1:
        cell += f" ({min(spread):.2f}-{max(spread):.2f})"
    return cell


def render(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        "# The serve path against the library path",
        "",
        machine_line(info),
        f"`python benchmarks/serve.py{' --quick' if info['quick'] else ''}"
        f"{' --redis' if info['redis'] else ''} --repeat {info['repeat']} --repeat-p1 "
        f"{info['repeat_p1']}`; one process per run, every process fresh (machine shared).",
        "",
    ]
    cells = []
    for row in rows:
        spread = row.get("repeats_wall_vs_library") or []
        overhead = ""
        if row["latency"] > 0 and row.get("problem_overhead_ms_mean") is not None:
            overhead = (
                f"{row['problem_overhead_ms_mean']:,.0f} / {row['problem_overhead_ms_max']:,.0f}"
            )
        cells.append(
            [
                row["bench"],
                row["path"],
                row["trajectories"],
                f"{row['ideal_s']:.2f}" if row["latency"] > 0 else "0",
                f"{row['wall_s']:.2f}",
                f"{row['wall_over_ideal']:.3f}" if "wall_over_ideal" in row else "",
                median_range(spread) if spread else "",
                overhead,
                cpu_cell(row),
                ""
                if row["path"].startswith("library")
                else f"{row['client_cpu_ms_per_trajectory']:.2f}",
            ]
        )
    lines += table(
        [
            "id",
            "path",
            "traj",
            "ideal s",
            "wall s",
            "wall/ideal",
            "wall vs library",
            "overhead ms (mean/max)",
            "CPU ms/traj (graph process)",
            "client CPU ms/traj",
        ],
        cells,
        "llrrrrrrrr",
    )
    lines += [
        "",
        "P1: 16 problems at once, K=[32, 4] (+ the final 1), 2-8 s calls; P4: the same at "
        "zero latency. library = each problem one `ainvoke` of the compiled graph in one "
        "process (`workload.py`); serve = `pacore serve` in its own process, each problem one "
        "request of model `pacore-32x4` (plain JSON, or SSE with `stream`), sent at once "
        "by an aiohttp client in the benchmark's process. wall = first request sent .. last "
        "answer received, in the client; ideal = from the simulated server's log of the same "
        "run; CPU ms/traj = CPU of the process that runs the graph (workload or server) / "
        "trajectories; client CPU = the HTTP client's (the library path has none). P4 rows: "
        f"the run with the median CPU of {info['repeat']}; P1 rows: the run with the median "
        f"wall of {info['repeat_p1']}; wall vs library: the median of the ratios of runs of "
        "the same repetition (their range in brackets). Repetitions run in turn (library, "
        "serve, ..., library, serve, ...), so a change in the shared machine's load hits both "
        "paths alike.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 problems, calls 4x shorter")
    parser.add_argument("--redis", action="store_true", help="add the Redis-checkpointed rows")
    parser.add_argument("--only", default="", help="P1 or P4")
    parser.add_argument("--name", default="serve", help="stem of the result files")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of each zero-latency row (median CPU)"
    )
    parser.add_argument(
        "--repeat-p1", type=int, default=1, help="runs of each P1 row (median wall ratio)"
    )
    args = parser.parse_args(argv)
    info: dict[str, Any] = run_info(
        quick=args.quick, redis=args.redis, repeat=args.repeat, repeat_p1=args.repeat_p1
    )
    chosen = [
        sc for sc in scenarios(args.quick, args.redis) if not args.only or sc["bench"] == args.only
    ]
    results: list[list[dict[str, Any]]] = [[] for _ in chosen]
    sim = Sim({"seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        redis = Redis(tmp) if args.redis else None
        try:
            for rep in range(max(args.repeat, args.repeat_p1)):
                for i, sc in enumerate(chosen):
                    if rep >= (args.repeat if sc["latency"] == 0 else args.repeat_p1):
                        continue
                    began = time.monotonic()
                    row = run_one(sc, sim, redis, Path(tmp), i * 100 + rep)
                    results[i].append(row)
                    print(
                        f"[{time.monotonic() - began:5.1f}s] {sc['bench']} {sc['path']} "
                        f"#{rep + 1}: wall {row['wall_s']:.3f} s, ideal "
                        f"{row.get('ideal_s', 0):.3f} s, cpu "
                        f"{row['cpu_ms_per_trajectory']:.2f} ms/traj, {row['trajectories']} "
                        f"traj, {row['n_errors']} errors",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            sim.stop()
            if redis is not None:
                redis.stop()
    rows = []
    for i, sc in enumerate(chosen):
        redis_row = sc.get("saver") == "redis"
        base = next(
            (
                results[j]
                for j, other in enumerate(chosen)
                if other["bench"] == sc["bench"]
                and other["path"].startswith("library")
                and (other.get("saver") == "redis") == redis_row
            ),
            None,
        )
        rows.append(aggregate(results[i], base))
    info["load_after"] = loadavg()
    text = render(rows, info)
    print(text)
    stem = args.name + ("_quick" if args.quick else "")
    path = write_results(stem, {**info, "rows": rows}, text)
    print(f"\nwritten: {path}.md, .json", file=sys.stderr)
    return 0 if all(not row["n_errors"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
