"""Bytes a PaCoRe run leaves in Redis, against the bytes of its trajectories.

Runs K=[32,4] (+ the final round) with 10 KB trajectories from a scripted server,
checkpointed by AsyncRedisSaver into a private redis-server, then sums the
serialized size (DUMP) of every key. Prints a table and writes
benchmarks/results/checkpoint_size.{md,json}.

    python benchmarks/checkpoint_size.py
"""

from __future__ import annotations

import asyncio
import json
import platform
import random
import shutil
import socket
import string
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from pacore_graph import ChatOpenAICompatible, create_pacore_graph
from pacore_graph.checkpoints import AsyncRedisSaver
from pacore_graph.testing import Reply, ScriptedServer

RESULTS = Path(__file__).parent / "results"
TRAJECTORY_BYTES = 10_000


_rng = random.Random(0)


def respond(body: dict) -> Reply:
    # 10 KB of incompressible text with a short conclusion after </think>.
    answer = _rng.randrange(1000)
    thinking = "".join(_rng.choices(string.ascii_letters + " ", k=TRAJECTORY_BYTES - 40))
    return Reply(content=f"<think>{thinking}</think>The answer is \\boxed{{{answer}}}.")


def raw_bytes(client: redis.Redis, key: bytes) -> int:
    """Bytes of a key's name, fields and values as stored, before Redis' own overhead."""
    kind = client.type(key)
    if kind == b"hash":
        body = sum(len(f) + len(v) for f, v in client.hgetall(key).items())
    elif kind == b"zset":
        body = sum(len(m) for m in client.zrange(key, 0, -1))
    elif kind == b"set":
        body = sum(len(m) for m in client.smembers(key))
    else:
        body = len(client.get(key) or b"")
    return len(key) + body


async def run(url: str, base_url: str) -> dict:
    model = ChatOpenAICompatible(base_url=base_url, model="scripted", api_key="none")
    async with AsyncRedisSaver.from_conn_string(url) as saver:
        graph = create_pacore_graph(model, rounds=[32, 4]).compile(checkpointer=saver)
        state = await graph.ainvoke(
            {"messages": [("user", "Find all n such that n^2+1 is prime.")]},
            {"configurable": {"thread_id": "size"}},
            durability="sync",
        )
    return state


def main() -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(respond) as server:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            state = asyncio.run(run(f"redis://127.0.0.1:{port}/0", server.base_url))
            keys = client.keys("*")
            stored = sum(raw_bytes(client, k) for k in keys)
            memory = sum(client.memory_usage(k, samples=0) or 0 for k in keys)
        finally:
            proc.kill()
    trajectories = state["pacore"]["trajectories"]
    text = sum(
        len(t["content"].encode()) + len((t["message"] or "").encode()) for t in trajectories
    )
    content = sum(len(t["content"].encode()) for t in trajectories)
    row = {
        "round_vector": state["pacore"]["round_vector"],
        "trajectories": len(trajectories),
        "trajectory_content_bytes": content,
        "trajectory_record_text_bytes": text,
        "redis_stored_bytes": stored,
        "redis_memory_usage_bytes": memory,
        "keys": len(keys),
        "serialized_over_content": round(stored / content, 3),
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}",
    }
    table = "\n".join(
        [
            "# Checkpoint size in Redis after one PaCoRe run",
            "",
            f"K = {row['round_vector']}, {TRAJECTORY_BYTES // 1000} KB trajectories, "
            f"durability=sync; machine: {row['machine']}",
            "",
            "| trajectories | content bytes | bytes stored | Redis memory | keys | ratio |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {row['trajectories']} | {content:,} | {stored:,} | {memory:,} | {len(keys)} "
            f"| {row['serialized_over_content']} |",
            "",
            "bytes stored = key names + fields + values; Redis memory = MEMORY USAGE",
            "(SAMPLES 0: every element, allocator overhead included).",
            "ratio = bytes stored / trajectory content bytes. Each",
            "trajectory's text is stored once, as its task's pending write (trajectories are",
            "a DeltaChannel), plus its compacted message where it differs from the content,",
            "and in the next round's references, once per round (round summaries name a",
            "reference by its trajectory's index): the Sends carry no prompt.",
        ]
    )
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "checkpoint_size.md").write_text(table + "\n")
    (RESULTS / "checkpoint_size.json").write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
