"""Is one round's dispatch linear in K? CPU per trajectory of one round of K on a model
that answers at once (no HTTP, no checkpointer), each K in a fresh process.

Issue 15's goal: the time per trajectory at K=16,384 is at most 1.5x that at K=1,024.
Run the Ks interleaved and repeated on a shared machine, and compare within one run:

    python benchmarks/dispatch.py 1024 16384 1024 16384
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class Instant(BaseChatModel):
    """A chat model whose reply is ready at once: what is measured is the orchestration."""

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        reply = AIMessage(
            content="<think>x</think>The answer is 7.",
            response_metadata={"finish_reason": "stop"},
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])

    async def _agenerate(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> ChatResult:
        return self._generate(messages)


def one_round(k: int) -> dict[str, Any]:
    """CPU and wall time of one PaCoRe run [K, 1] after a warm-up run."""
    from pacore_graph import create_pacore_graph

    graph = create_pacore_graph(Instant(), rounds=[k, 1], max_k=k, max_trajectories=k + 1).compile()

    async def run() -> tuple[float, float]:
        await graph.ainvoke({"messages": [("user", "warm-up")]}, context={"rounds": [2]})
        wall, cpu = time.perf_counter(), time.process_time()
        await graph.ainvoke({"messages": [("user", "Find n.")]}, {"max_concurrency": k})
        return time.perf_counter() - wall, time.process_time() - cpu

    wall, cpu = asyncio.run(run())
    return {"K": k, "wall_s": round(wall, 3), "us_per_trajectory": round(1e6 * cpu / (k + 1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("k", type=int, nargs="+", help="round sizes, each run in its own process")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(one_round(args.k[0])), flush=True)
        return
    rows: dict[int, list[int]] = {}
    for k in args.k:
        out = subprocess.run(
            [sys.executable, __file__, "--in-process", str(k)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.splitlines()[-1])
        rows.setdefault(k, []).append(row["us_per_trajectory"])
        print(json.dumps(row), flush=True)
    smallest = min(rows)
    base = sorted(rows[smallest])[len(rows[smallest]) // 2]
    for k, values in sorted(rows.items()):
        median = sorted(values)[len(values) // 2]
        print(f"K={k}: {median} us a trajectory (median), {median / base:.2f}x K={smallest}")


if __name__ == "__main__":
    main()
