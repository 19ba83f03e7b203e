"""Throughput of the embedded backend (llama.cpp + SmolLM2-135M on the CPU).

Starts an :class:`~pacore_graph.backends.embedded.EmbeddedServer`, then measures
generated tokens per second for one request alone and for 8 concurrent requests
(continuous batching over 8 slots), and writes a Markdown table and the raw numbers
to ``benchmarks/results/embedded_throughput.{md,json}``.

Run: ``python benchmarks/embedded_throughput.py [--max-tokens 128] [--n-threads 2,1]``

Requests use ``ignore_eos`` so each one decodes exactly ``max_tokens`` tokens and runs
compare like for like; ``temperature`` is 1.0, PaCoRe's sampling setting.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import openai

from pacore_graph.backends.embedded import EmbeddedServer

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


async def _one(client: openai.AsyncOpenAI, model: str, max_tokens: int, i: int) -> int:
    response = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"{PROMPT} ({i})"}],
        max_tokens=max_tokens,
        temperature=1.0,
        extra_body={"ignore_eos": True},
    )
    assert response.usage is not None
    return response.usage.completion_tokens


async def _measure(server: EmbeddedServer, concurrency: int, max_tokens: int) -> dict[str, Any]:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="none", max_retries=0, timeout=600
    ) as client:
        began = time.perf_counter()
        tokens = await asyncio.gather(
            *(_one(client, server.model_name, max_tokens, i) for i in range(concurrency))
        )
        seconds = time.perf_counter() - began
    return {"tokens": sum(tokens), "seconds": seconds, "tokens_per_s": sum(tokens) / seconds}


async def _bench(server: EmbeddedServer, max_tokens: int, repeats: int) -> list[dict[str, Any]]:
    await _measure(server, 1, 8)  # warm-up: first-request allocations, page cache
    rows = []
    for concurrency in (1, server.n_parallel):
        runs = [await _measure(server, concurrency, max_tokens) for _ in range(repeats)]
        rates = [r["tokens_per_s"] for r in runs]
        rows.append(
            {
                "concurrent_requests": concurrency,
                "max_tokens": max_tokens,
                "tokens_per_s_median": statistics.median(rates),
                "per_request_tokens_per_s": statistics.median(rates) / concurrency,
                "runs": runs,
            }
        )
    return rows


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _machine(server: EmbeddedServer) -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:  # Linux; "?" elsewhere
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "usable_cpus": _usable_cpus(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "xllamacpp": version("xllamacpp"),
        "model": server.model_name,
        "n_parallel": server.n_parallel,
        "n_ctx": server.n_ctx,
    }


def _loads(loads: tuple[float, ...]) -> str:
    return "/".join(f"{x:.2f}" for x in loads)


def _markdown(machine: dict[str, Any], rows: list[dict[str, Any]], when: str) -> str:
    lines = [
        "# Embedded backend throughput",
        "",
        f"{machine['model']} on llama.cpp (xllamacpp {machine['xllamacpp']}), CPU only; {when}.",
        "",
        f"- Machine: {machine['platform']}, {machine['cpu_model']}, "
        f"{machine['cpu_count']} CPUs ({machine['usable_cpus']} usable); load average "
        f"(1/5/15 min) at start {_loads(machine['load_average_at_start'])}, "
        f"at end {_loads(machine['load_average_at_end'])}",
        f"- Server: n_parallel={machine['n_parallel']}, n_ctx={machine['n_ctx']} "
        f"({machine['n_ctx'] // machine['n_parallel']} per slot); one server per n_threads",
        "- Requests: temperature 1.0, ignore_eos (every request decodes max_tokens tokens); "
        "median of the runs",
        "- llama.cpp's threads meet at a barrier after every operation: when another process "
        "takes one of their cores, decoding slows several-fold. Fewer threads than cores "
        "trade peak speed for steadiness on a shared machine.",
        "",
        "| n_threads | server start (s) | concurrent requests | max_tokens "
        "| total tokens/s | tokens/s per request |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['n_threads']} | {row['server_start_s']:.2f} "
            f"| {row['concurrent_requests']} | {row['max_tokens']} "
            f"| {row['tokens_per_s_median']:.1f} | {row['per_request_tokens_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Runs the benchmark for each thread count and writes the results files."""
    usable = _usable_cpus()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-parallel", type=int, default=8)
    parser.add_argument(
        "--n-threads",
        default=",".join(map(str, sorted({usable, max(1, usable - 1)}, reverse=True))),
        help="comma-separated thread counts, one server each (default: all cores, and one "
        "fewer: llama.cpp stalls when another process takes one of its cores)",
    )
    args = parser.parse_args()

    machine: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for n_threads in (int(n) for n in args.n_threads.split(",")):
        with EmbeddedServer(n_parallel=args.n_parallel, n_threads=n_threads) as server:
            machine = machine or _machine(server)
            for row in asyncio.run(_bench(server, args.max_tokens, args.repeats)):
                rows.append({"n_threads": n_threads, "server_start_s": server.start_seconds, **row})
    machine["load_average_at_end"] = os.getloadavg()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = _markdown(machine, rows, when)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embedded_throughput.md").write_text(table, encoding="utf-8")
    (RESULTS / "embedded_throughput.json").write_text(
        json.dumps({"measured": when, "machine": machine, "results": rows}, indent=2) + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
