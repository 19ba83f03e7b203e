"""The processes a benchmark talks to: the simulated server and a private redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # for tests.servers


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

        from tests.servers import RedisNotInstalledError, RedisServer

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
