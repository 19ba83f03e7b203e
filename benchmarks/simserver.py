"""The simulated OpenAI-compatible server: `pacore_graph.testing.ScriptedServer` answering
each call after a latency known in advance.

A call draws its output length from a seeded RNG and is answered after ``ttft + tokens /
rate`` seconds (JSON, or SSE spread over that time), with ``usage``. Capacity is
unlimited, so the ideal wall time of a workload is computable from the server's log.

The K calls of one PaCoRe round are byte-identical (what vLLM's prefix cache serves), so a
draw is keyed by (seed, key, n), n counting the arrivals of the same ``messages`` (a
*group*). The key (``SimConfig.draw_key``) is "prompt", the sha256 of the ``messages``:
contenders meet the same latencies exactly when they send the same prompts, which
``run.py`` checks on the log; or "round", the problem (its ``[problem N]`` tag, -1
without) and round (the group's ordinal among its problem's, in arrival order), whatever
the prompt quotes, for contenders whose later rounds differ (each problem's rounds must
arrive one after another). Whatever the order of a round's calls, their latencies are
the same multiset, and each n has a reply of its own length (the sort key of the
references), so the whole workload is deterministic.

Besides the OpenAI endpoints: ``POST /sim/reset`` (clear log and counters, optionally set
``latency_scale``), ``GET /sim/log`` (each call's problem, group, round, n, draw and
``time.monotonic`` received / sent, comparable across processes), ``GET /sim/stats``.

    python benchmarks/simserver.py --port 8000     # serve until interrupted
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import math
import os
import random
import re
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiohttp import web

from pacore_graph.testing import Reply, ScriptedServer, last_user_text

PROBLEM_TAG = re.compile(r"\[problem (\d+)\]")


@dataclass
class SimConfig:
    """How the server draws and shapes its replies."""

    seed: int = 0
    rate: float = 100.0
    """Simulated decode rate of one sequence, tokens per second."""
    dist: str = "uniform"
    """Output lengths: "uniform" in [min_s, max_s] seconds of decoding, or "lognormal" (heavy
    tailed, as reasoning is) of median ``median_s`` and log-sd ``sigma`` (1: the slowest of
    16 is ~6x the median)."""
    min_s: float = 2.0
    max_s: float = 8.0
    median_s: float = 0.5
    sigma: float = 1.0
    ttft_s: float = 0.0
    """Time to first token added to every request."""
    bytes_per_token: int = 4
    """Reply size: thinking of about bytes_per_token x tokens, plus the conclusion."""
    conclusion_bytes: int = 300
    """Size of the text after </think>, what later rounds see."""
    stream_interval_s: float = 0.1
    """SSE: one chunk per interval (not per token, to keep the server light)."""
    latency_scale: float = 1.0
    """Multiplies every latency; 0 gives a zero-latency server (orchestration cost only)."""
    draw_key: str = "prompt"
    """"prompt" or "round": see the module docstring."""

    def __post_init__(self) -> None:
        if self.draw_key not in ("prompt", "round"):
            raise ValueError(f"draw_key must be prompt or round, got {self.draw_key!r}")
        if self.dist not in ("uniform", "lognormal"):
            raise ValueError(f"dist must be uniform or lognormal, got {self.dist!r}")


@dataclass
class Draw:
    tokens: int
    latency: float


@dataclass
class Arrival:
    """A request as the server sees it: group (sha256 of its ``messages``), problem, round,
    arrival number n in its group, and what it drew."""

    group: str
    problem: int
    round: int
    n: int
    draw: Draw


class SimServer:
    """The draws and the log of the simulated server; `respond` answers its calls."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.arrivals: dict[str, int] = {}
        self.rounds: dict[int, dict[str, int]] = {}
        """Per problem, each group's round (its ordinal in arrival order)."""
        self.log: list[dict[str, Any]] = []

    def arrive(self, messages: list[dict[str, Any]], canonical: bytes) -> Arrival:
        """Counts a request (``canonical``: its ``messages`` as bytes) and draws for it."""
        group = hashlib.sha256(canonical).hexdigest()
        n = self.arrivals.get(group, 0)
        self.arrivals[group] = n + 1
        tag = PROBLEM_TAG.search(last_user_text({"messages": messages}))
        problem = int(tag.group(1)) if tag else -1
        groups = self.rounds.setdefault(problem, {})
        round_ = groups.setdefault(group, len(groups))
        key = group if self.config.draw_key == "prompt" else f"p{problem}:r{round_}"
        return Arrival(group, problem, round_, n, self.draw(key, n))

    def draw(self, key: str, n: int) -> Draw:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{key}:{n}")
        if cfg.dist == "lognormal":
            tokens = max(1, round(cfg.median_s * math.exp(cfg.sigma * rng.gauss()) * cfg.rate))
        else:
            low = max(1, round(cfg.min_s * cfg.rate))
            tokens = rng.randint(low, max(low, round(cfg.max_s * cfg.rate)))
        return Draw(tokens, (cfg.ttft_s + tokens / cfg.rate) * cfg.latency_scale)

    def content(self, group: str, n: int, tokens: int) -> str:
        """Thinking and conclusion; the total length is distinct for each n (< 1024)."""
        size = (tokens * self.config.bytes_per_token // 1024) * 1024 + n % 1024
        head = f"Conclusion {group[:8]}-{n}: "
        answer = f" The answer is \\boxed{{{int(group[:6], 16) % 97 + n}}}."
        pad = max(0, self.config.conclusion_bytes - len(head) - len(answer))
        thinking = ("lorem ipsum " * (size // 12 + 1))[:size]
        return f"<think>{thinking}</think>{head}{('because ' * (pad // 8 + 1))[:pad]}{answer}"

    async def respond(self, body: dict[str, Any]) -> Reply:
        received = time.monotonic()
        messages = body.get("messages") or []
        # The bytes of `messages` as sent: the prefix a vLLM server would cache.
        canonical = orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)
        a = self.arrive(messages, canonical)
        entry = {"problem": a.problem, "group": a.group[:16], "round": a.round, "n": a.n}
        entry |= {"tokens": a.draw.tokens, "latency": a.draw.latency}
        entry |= {"received": received, "sent": None}
        self.log.append(entry)
        return Reply(
            content=self.content(a.group, a.n, a.draw.tokens),
            prompt_tokens=len(canonical) // 4,
            completion_tokens=a.draw.tokens,
            delay=a.draw.latency,
            pieces=max(1, int(a.draw.latency / self.config.stream_interval_s)),
            on_sent=lambda: entry.__setitem__("sent", time.monotonic()),
            transform=orjson.dumps,  # 20x json's speed on a 2.5 kB completion
        )

    def add_routes(self, server: ScriptedServer) -> None:
        """Serves ``/sim/reset``, ``/sim/log`` and ``/sim/stats`` on ``server``."""

        async def reset(request: web.Request) -> web.Response:
            data = await request.json() if request.can_read_body else {}
            for records in (self.arrivals, self.rounds, self.log, server.connections):
                records.clear()
            for calls in (server.requests, server.times, server.authorizations):
                calls.clear()
            server.max_in_flight = server.in_flight
            if data.get("latency_scale") is not None:
                self.config.latency_scale = data["latency_scale"]
            return web.json_response({"ok": True, "config": asdict(self.config)})

        async def log(_: web.Request) -> web.Response:
            return web.Response(body=orjson.dumps(self.log), content_type="application/json")

        async def stats(_: web.Request) -> web.Response:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return web.json_response(
                {
                    "cpu_s": usage.ru_utime + usage.ru_stime,
                    "max_rss_kb": usage.ru_maxrss,
                    "requests": len(self.log),
                    "max_in_flight": server.max_in_flight,
                    "connections": len(server.connections),
                }
            )

        server.app.router.add_post("/sim/reset", reset)
        server.app.router.add_get("/sim/log", log)
        server.app.router.add_get("/sim/stats", stats)


def raise_fd_limit() -> None:
    """Thousands of sockets in flight need more than the usual soft limit of 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}", help="SimConfig fields as JSON")
    args = parser.parse_args(argv)
    raise_fd_limit()
    # Importing pacore_graph leaves ~195,000 objects that each full collection would walk
    # (~1 s on a loaded 2-core machine); frozen, the longest lateness of 400 streams fell
    # from 1.1-1.5 s to 0.3-0.5 s.
    gc.freeze()
    sim = SimServer(SimConfig(**json.loads(args.config)))
    server = ScriptedServer(sim.respond, model="sim", host=args.host, port=args.port)
    sim.add_routes(server)
    try:  # uvloop when installed: the server must not be the bottleneck
        from uvloop import run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    ready = {"port": server.port, "pid": os.getpid()}
    with contextlib.suppress(KeyboardInterrupt):
        run(server.serve(lambda: print(json.dumps(ready), flush=True)))


if __name__ == "__main__":
    main()
