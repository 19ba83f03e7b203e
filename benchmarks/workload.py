"""One benchmark workload, run in a fresh process: the PaCoRe graph or the asyncio reference.

``benchmarks/run.py`` starts this as ``python benchmarks/workload.py SPEC_JSON`` so each
scenario has its own interpreter (clean memory, no state carried between scenarios),
and reads one JSON line from stdout: monotonic start / end times (comparable with the
simulated server's log), each problem's finish time, CPU seconds of this process, and
resident memory (baseline before the run, peak during it, sampled every 10 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simserver import raise_fd_limit

PAGE = os.sysconf("SC_PAGE_SIZE")


def problem_text(i: int) -> str:
    return (
        f"[problem {i}] Find all positive integers n such that n^2 + {i + 1} divides "
        f"{i + 2}^n + 1, and prove that your list is complete."
    )


WARMUP = "A warm-up problem (not measured): what is 2 + 2?"
"""Run once before the clock starts (K=[2,1]), so lazy imports and first-call set-up
(pydantic models, connection pools, the Redis connection) are not timed."""


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
async def checkpointer(kind: str, redis_url: str | None):
    if kind == "none":
        yield None
    elif kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
    elif kind == "redis":
        from pacore_graph.checkpoints import AsyncRedisSaver

        async with AsyncRedisSaver.from_conn_string(redis_url) as saver:
            yield saver
    else:
        raise ValueError(kind)


async def run_graph(spec: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    from pacore_graph import ChatOpenAICompatible, create_pacore_graph
    from pacore_graph.threads import thread_lease

    model_kwargs = spec.get("model_kwargs") or {}
    model = ChatOpenAICompatible(
        base_url=spec["base_url"], model="sim", api_key="sim", **model_kwargs
    )
    finished: list[float] = [0.0] * len(problems)
    counts: list[int] = [0] * len(problems)
    sizes: list[int] = [0] * len(problems)
    async with checkpointer(spec["saver"], spec.get("redis_url")) as saver:
        graph = create_pacore_graph(model, rounds=spec["rounds"]).compile(checkpointer=saver)
        durability = "sync" if saver is not None else None

        async def one(i: int, text: str) -> None:
            config: dict[str, Any] = {
                "max_concurrency": spec["max_concurrency"],
                "configurable": {"thread_id": f"{spec['run_id']}-{i}"},
            }
            payload = {"messages": [("user", text)]}
            if spec.get("stream"):
                state: dict[str, Any] = {}
                async for mode, chunk in graph.astream(
                    payload, config, stream_mode=["messages", "values"], durability=durability
                ):
                    if mode == "values":
                        state = chunk
            else:
                # "lease": one writer per thread, held as arun_thread (CLI, eval, web) holds it.
                held = thread_lease(graph, config) if spec.get("lease") else None
                async with held or contextlib.nullcontext(config) as leased:
                    state = await graph.ainvoke(payload, leased, durability=durability)
            finished[i] = time.monotonic()
            trajectories = state["pacore"]["trajectories"]
            counts[i] = len(trajectories)
            sizes[i] = sum(len(t["content"].encode()) for t in trajectories)

        warm = time.monotonic()
        await _warm(model)
        await graph.ainvoke(
            {"messages": [("user", WARMUP)]},
            {"max_concurrency": 4, "configurable": {"thread_id": f"{spec['run_id']}-warmup"}},
            context={"rounds": [2]},
            durability=durability,
        )
        warm = time.monotonic() - warm
        result = await _measure(spec, [one(i, p) for i, p in enumerate(problems)])
        result["warmup_s"] = warm
    result["finished"] = finished
    result["trajectories"] = sum(counts)
    result["content_bytes"] = sum(sizes)
    return result


async def _warm(model: Any) -> None:
    """Lazy imports and client set-up happen before the clock starts."""
    await model.root_async_client.models.list()


async def run_asyncio(spec: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    from asyncio_reference import solve

    sem = asyncio.Semaphore(spec["semaphore"])
    url = spec["base_url"].rstrip("/") + "/chat/completions"
    finished: list[float] = [0.0] * len(problems)
    counts: list[int] = [0] * len(problems)

    async def one(i: int, text: str) -> None:
        out = await solve(url, "sim", [{"role": "user", "content": text}], spec["rounds"], sem)
        finished[i] = time.monotonic()
        counts[i] = sum(len(r) for r in out["round_responses"])

    warm = time.monotonic()
    await solve(url, "sim", [{"role": "user", "content": WARMUP}], [2], sem)
    warm = time.monotonic() - warm
    result = await _measure(spec, [one(i, p) for i, p in enumerate(problems)])
    result["warmup_s"] = warm
    result["finished"] = finished
    result["trajectories"] = sum(counts)
    return result


async def _measure(spec: dict[str, Any], jobs: list[Any]) -> dict[str, Any]:
    profiler = cProfile.Profile() if spec.get("profile") else None
    cpu0 = cpu_s()
    jiffies0 = busy_jiffies()
    with MemorySampler() as memory:
        t0 = time.monotonic()
        if profiler is not None:
            profiler.enable()
            if spec.get("profile_window_s"):  # only the first round's dispatch burst
                asyncio.get_running_loop().call_later(spec["profile_window_s"], profiler.disable)
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        if profiler is not None:
            profiler.disable()
        t1 = time.monotonic()
    cpu1 = cpu_s()
    jiffies1 = busy_jiffies()
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    errors = [f"{type(e).__name__}: {e}" for e in outcomes if isinstance(e, BaseException)]
    return {
        "t0": t0,
        "t1": t1,
        "wall_s": t1 - t0,
        "cpu_s": cpu1 - cpu0,
        "machine_busy_s": (jiffies1[0] - jiffies0[0]) / os.sysconf("SC_CLK_TCK"),
        "machine_total_s": (jiffies1[1] - jiffies0[1]) / os.sysconf("SC_CLK_TCK"),
        "rss_baseline": memory.baseline,
        "rss_peak": memory.peak,
        "errors": errors[:5],
        "n_errors": len(errors),
    }


def experiment(spec: dict[str, Any]) -> None:
    """Options that try a change before it is made (run.py --experiment)."""
    import gc

    if spec.get("gc") == "off":  # what the cyclic GC costs
        gc.disable()
    elif spec.get("gc") == "freeze":  # what the CLI would gain from gc.freeze() after imports
        import pacore_graph  # noqa: F401  (its imports are what is frozen)

        gc.collect()
        gc.freeze()
    if spec.get("patch_node"):
        # The proposed change to pacore_graph/nodes/trajectory.py: build the node as
        # LangGraph's RunnableCallable (signature inspected once) instead of a
        # RunnableLambda (signature inspected 4 times per call).
        from langgraph._internal._runnable import RunnableCallable

        import pacore_graph.nodes.trajectory as node

        def runnable(func: Any, afunc: Any = None, name: str | None = None) -> Any:
            return RunnableCallable(func, afunc, name=name)

        node.RunnableLambda = runnable  # type: ignore[attr-defined]


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_fd_limit()
    experiment(spec)
    problems = [problem_text(i) for i in range(spec["problems"])]
    runner = run_graph if spec["kind"] == "graph" else run_asyncio
    if spec.get("uvloop"):
        import uvloop

        result = uvloop.run(runner(spec, problems))
    else:
        result = asyncio.run(runner(spec, problems))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
