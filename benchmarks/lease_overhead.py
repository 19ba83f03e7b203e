"""What the thread lease costs a write: fenced (one Lua script checking the lease) vs plain
(MULTI/EXEC), on a private redis-server, interleaved so both see the same machine load.

Each sample is 200 sequential ``aput_writes`` of a 10 KB trajectory (what a finished
trajectory writes) or ``aput`` of a checkpoint; the medians of 20 samples are printed,
per write: wall time and this process's CPU time.

    python benchmarks/lease_overhead.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langgraph.checkpoint.base import empty_checkpoint

from pacore_graph.checkpoints import AsyncRedisSaver
from tests.servers import RedisServer

WRITES = 200
SAMPLES = 20


async def measure(url: str) -> dict[str, dict[str, list[float]]]:
    """Per-write (wall ms, CPU ms) samples of each kind of write, plain and fenced."""
    out: dict[str, dict[str, list[float]]] = {}
    async with AsyncRedisSaver.from_conn_string(url) as saver:
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"x": 1}
        checkpoint["channel_versions"] = {"x": "1"}
        root: Any = {"configurable": {"thread_id": "bench", "checkpoint_ns": ""}}
        base = await saver.aput(root, checkpoint, {}, {"x": "1"})
        trajectory = {"content": "y" * 10_000, "round": 1}
        async with saver.alease("bench") as held:
            configs = {"plain": base, "lease": held.bind(base)}
            for sample in range(SAMPLES):
                for name, config in configs.items():
                    for kind in ("put_writes", "put"):
                        wall, cpu = time.perf_counter(), time.process_time()
                        for i in range(WRITES):
                            if kind == "put_writes":
                                writes = [("trajectories", trajectory)]
                                await saver.aput_writes(config, writes, f"{name}{sample}-{i}")
                            else:
                                await saver.aput(config, checkpoint, {}, {"x": "1"})
                        row = out.setdefault(f"{kind} {name}", {"wall": [], "cpu": []})
                        row["wall"].append((time.perf_counter() - wall) / WRITES * 1e3)
                        row["cpu"].append((time.process_time() - cpu) / WRITES * 1e3)
    return out


def main() -> None:
    server = RedisServer(Path(tempfile.mkdtemp()))
    server.start()
    try:
        rows = asyncio.run(measure(server.url))
    finally:
        server.kill()
    medians = {k: {m: statistics.median(v) for m, v in row.items()} for k, row in rows.items()}
    print("| write | wall ms | client CPU ms |\n|---|---:|---:|")
    for key, row in medians.items():
        print(f"| {key} | {row['wall']:.3f} | {row['cpu']:.3f} |")
    for kind in ("put_writes", "put"):
        lease, plain = medians[f"{kind} lease"], medians[f"{kind} plain"]
        print(
            f"{kind}: fenced / plain = {lease['wall'] / plain['wall']:.2f}x wall, "
            f"{lease['cpu'] / plain['cpu']:.2f}x client CPU"
        )


if __name__ == "__main__":
    main()
