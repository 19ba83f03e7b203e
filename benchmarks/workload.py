"""One benchmark workload, run in a fresh process: the official pipeline, pacore, or dispatch.

``benchmarks/run.py`` starts this as ``python benchmarks/workload.py SPEC_JSON`` so each
run has its own interpreter (clean memory, no state carried between runs), and reads one
``RESULT`` JSON line from stdout: monotonic start / end times (comparable with the
simulated server's log), each problem's finish time when the contender reports it, CPU
seconds of this process, resident memory (baseline before the run, peak during it,
sampled every 10 ms), and the cyclic collector's passes per generation and their CPU.

Kinds:

- ``official``: the official stepfun-ai/PaCoRe pipeline from the extract ``spec["official"]``
  (``official.py``), one ``await exp.async_run()`` over a jsonl of the problems;
- ``pacore``: the compiled graph, each problem one ``ainvoke`` under ``asyncio.gather``,
  one model instance (one connection pool), ``max_concurrency`` = the largest K, and
  ``durability="sync"`` with a saver (as the CLI does);
- ``dispatch``: one round of K trajectories (+ the final 1) on LangChain's in-process fake
  chat model, no HTTP: what the graph's fan-out costs as K grows.

Both ``official`` and ``pacore`` solve a warm-up problem first, off the clock, so lazy
imports and first-call set-up are not timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simserver import raise_fd_limit

PAGE = os.sysconf("SC_PAGE_SIZE")


def problem_text(i: int) -> str:
    """Problem ``i``; the ``[problem N]`` tag lets the simulated server group its calls."""
    return (
        f"[problem {i}] Find all positive integers n such that n^2 + {i + 1} divides "
        f"{i + 2}^n + 1, and prove that your list is complete."
    )


CLI_GC_THRESHOLD = (100_000, 50, 100)
"""``gc.set_threshold`` of the ``pacore`` commands (pacore_graph/collector.py)."""


class GcStats:
    """Collections per generation, and the CPU seconds they took, while installed."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.cpu_s = 0.0
        self.collected = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.process_time()
        else:
            self.count[info["generation"]] += 1
            self.cpu_s += time.process_time() - self._began
            self.collected += info["collected"]

    def __enter__(self) -> GcStats:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


WARMUP = "A warm-up problem (not measured): what is 2 + 2?"
"""Solved once before the clock starts (K=[2,1])."""


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, to see what others use."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class MemorySampler:
    """Peak resident set size while the workload runs."""

    def __init__(self, every_s: float = 0.01) -> None:
        self.every_s = every_s
        self.baseline = rss()
        self.peak = self.baseline
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss())
            await asyncio.sleep(self.every_s)

    def __enter__(self) -> MemorySampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = max(self.peak, rss())
        if self._task is not None:
            self._task.cancel()


@contextlib.asynccontextmanager
async def checkpointer(kind: str, redis_url: str | None) -> AsyncIterator[Any]:
    if kind == "none":
        yield None
    elif kind == "redis":
        from pacore_graph.checkpoints import AsyncRedisSaver

        async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
            yield saver
    else:
        raise ValueError(f"unknown saver {kind!r}")


async def run_pacore(spec: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    from pacore_graph import ChatOpenAICompatible, create_pacore_graph

    if spec.get("gc_freeze"):  # what the `pacore` commands do after their imports
        gc.collect()
        gc.freeze()
        gc.set_threshold(*CLI_GC_THRESHOLD)

    model = ChatOpenAICompatible(base_url=spec["base_url"], model="sim", api_key="sim")
    finished: list[float] = [0.0] * len(problems)
    counts: list[int] = [0] * len(problems)
    sizes: list[int] = [0] * len(problems)
    async with checkpointer(spec["saver"], spec.get("redis_url")) as saver:
        graph = create_pacore_graph(model, rounds=spec["rounds"]).compile(checkpointer=saver)
        durability = "sync" if saver is not None else None

        async def one(i: int, text: str) -> None:
            config: dict[str, Any] = {
                "max_concurrency": max(spec["rounds"]),
                "configurable": {"thread_id": f"{spec['run_id']}-{i}"},
            }
            payload = {"messages": [("user", text)]}
            state = await graph.ainvoke(payload, config, durability=durability)
            finished[i] = time.monotonic()
            trajectories = state["pacore"]["trajectories"]
            counts[i] = len(trajectories)
            sizes[i] = sum(len(t["content"].encode()) for t in trajectories)

        warm = time.monotonic()
        await model.root_async_client.models.list()
        await graph.ainvoke(
            {"messages": [("user", WARMUP)]},
            {"max_concurrency": 4, "configurable": {"thread_id": f"{spec['run_id']}-warmup"}},
            context={"rounds": [2]},
            durability=durability,
        )
        warm = time.monotonic() - warm
        result = await measure(
            spec,
            lambda: asyncio.gather(
                *(one(i, p) for i, p in enumerate(problems)), return_exceptions=True
            ),
        )
        result["warmup_s"] = warm
    result["finished"] = finished
    result["trajectories"] = sum(counts)
    result["content_bytes"] = sum(sizes)
    return result


async def run_official(spec: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    from official import load_exp, log_to_file, official_exp, write_problems

    exp_class = load_exp(spec["official"])
    with tempfile.TemporaryDirectory() as tmp:
        log_to_file(spec.get("official_log") or os.path.join(tmp, "official.log"))

        def exp(name: str, rows: list[str], rounds: list[int]) -> Any:
            data = os.path.join(tmp, f"{name}.jsonl")
            write_problems(data, rows)
            return official_exp(
                exp_class,
                api_base=spec["base_url"].rstrip("/") + "/chat/completions",
                data_path=data,
                output_dir=os.path.join(tmp, name),
                rounds=rounds,
                # Never the bound: its example's 1024, or the workload's widest round.
                max_concurrent=max(1024, len(problems) * max(spec["rounds"])),
            )

        warm = time.monotonic()
        await exp("warmup", [WARMUP], [2]).async_run()
        warm = time.monotonic() - warm
        measured = exp("measured", problems, spec["rounds"])
        outcome: list[Any] = []

        async def run() -> None:
            outcome.append(await measured.async_run())

        result = await measure(spec, run)
    rows = outcome[0] if outcome else []
    responses = [r for row in rows for rnd in row.get("round_responses", []) for r in rnd]
    result["warmup_s"] = warm
    result["finished"] = []  # it reports no problem's finish time, only the whole run's
    result["trajectories"] = len(responses)
    result["content_bytes"] = sum(len((r.get("content") or "").encode()) for r in responses)
    # It records a failed call as an empty response and a failed problem as an "error" row.
    failed = [r for r in responses if not r.get("content")] + [r for r in rows if "error" in r]
    result["n_errors"] += len(failed)
    result["errors"] += [f"official: {len(failed)} failed calls or problems"] if failed else []
    return result


async def run_dispatch(spec: dict[str, Any]) -> dict[str, Any]:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from pacore_graph import create_pacore_graph

    k = spec["k"]
    model = FakeListChatModel(responses=["<think>t</think>The answer is \\boxed{4}."])
    graph = create_pacore_graph(model, rounds=[k], max_k=k, max_trajectories=k + 1).compile()
    config: dict[str, Any] = {"max_concurrency": k}
    await graph.ainvoke({"messages": [("user", WARMUP)]}, config, context={"rounds": [2]})
    counts: list[int] = []

    async def run() -> None:
        state = await graph.ainvoke({"messages": [("user", problem_text(0))]}, config)
        counts.append(len(state["pacore"]["trajectories"]))

    result = await measure(spec, run)
    result["trajectories"] = counts[0] if counts else 0
    return result


async def measure(spec: dict[str, Any], job: Any) -> dict[str, Any]:
    """Runs ``job()`` on the clock: wall, this process' CPU, memory, machine load."""
    profiler = cProfile.Profile() if spec.get("profile") else None
    cpu0 = cpu_s()
    jiffies0 = busy_jiffies()
    errors: list[str] = []
    with MemorySampler() as memory, GcStats() as collections:
        t0 = time.monotonic()
        if profiler is not None:
            profiler.enable()
        try:
            outcomes = await job()
        except Exception as exc:  # reported, not raised: the harness shows it in the row
            outcomes = [exc]
        if profiler is not None:
            profiler.disable()
        t1 = time.monotonic()
    cpu1 = cpu_s()
    jiffies1 = busy_jiffies()
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    for outcome in outcomes or []:
        if isinstance(outcome, BaseException):
            errors.append(f"{type(outcome).__name__}: {outcome}")
    return {
        "t0": t0,
        "t1": t1,
        "wall_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "machine_busy_s": (jiffies1[0] - jiffies0[0]) / os.sysconf("SC_CLK_TCK"),
        "machine_total_s": (jiffies1[1] - jiffies0[1]) / os.sysconf("SC_CLK_TCK"),
        "rss_baseline": memory.baseline,
        "rss_peak": memory.peak,
        "gc_collections": collections.count,
        "gc_cpu_s": collections.cpu_s,
        "gc_collected": collections.collected,
        "errors": errors[:5],
        "n_errors": len(errors),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_fd_limit()
    problems = [problem_text(i) for i in range(spec.get("problems", 0))]
    if spec["kind"] == "official":
        result = asyncio.run(run_official(spec, problems))
    elif spec["kind"] == "pacore":
        result = asyncio.run(run_pacore(spec, problems))
    elif spec["kind"] == "dispatch":
        result = asyncio.run(run_dispatch(spec))
    else:
        raise SystemExit(f"unknown workload kind {spec['kind']!r}")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
