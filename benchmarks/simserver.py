"""A simulated OpenAI-compatible server whose latency per request is known in advance.

Each ``POST /v1/chat/completions`` draws its output length from a seeded RNG and
answers after ``ttft + tokens / rate`` seconds (plain JSON, or SSE when the request
says ``"stream": true``), reporting ``usage``. Capacity is unlimited: every request
gets its drawn latency whatever else is in flight, so the ideal wall time of a
workload is exactly computable from the server's log.

Telling trajectories apart: the K calls of one PaCoRe round are byte-identical
(that is what lets vLLM's prefix cache serve them), so the draw cannot depend on the
prompt alone. It depends on (seed, sha256 of the request's ``messages``, n), where n
counts the arrivals of that exact prompt (0, 1, ..., K-1). Whatever order the K calls
arrive in, the multiset of their K latencies is the same, hence so is the round's
slowest. The reply's length (the sort key of the reference order of M) is distinct
for each n, so the next round's prompt, and so its draws, do not depend on arrival
order either: the whole workload is deterministic.

The problem a request belongs to is read from a ``[problem N]`` tag in its last user
message (the synthesis prompt quotes the original problem, so later rounds carry it
too). Requests with identical ``messages`` form one *group*: one round of one
problem. ``GET /sim/log`` returns every request with its problem, group, round,
arrival number, drawn latency and monotonic receive / send times (``time.monotonic``
is system-wide, so a client process can compare them with its own clock).

What a draw is keyed by (``SimConfig.draw_key``):

- ``"prompt"`` (the default): (seed, sha256 of the ``messages``, n), as above. Two
  contenders meet the same latencies exactly when they send the same prompts, which is
  what ``run.py`` checks on the log.
- ``"round"``: (seed, problem N, round, n), where the round is the group's ordinal
  among its problem's distinct groups in arrival order (0 for the first round, 1 for
  the next, ...). The prompt's text no longer matters: two contenders whose later
  rounds quote different references (a straggler policy drops some) still meet the
  same multiset of latencies in each (problem, round). Calls without a tag share
  problem -1. Needs each problem's rounds to arrive one after another (PaCoRe's do).

Endpoints besides the OpenAI ones: ``POST /sim/reset`` (clear log and counters,
optionally set ``latency_scale``), ``GET /sim/log``, ``GET /sim/stats`` (server CPU).

    python benchmarks/simserver.py --port 8000     # serve until interrupted
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import re
import resource
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

try:  # a faster JSON codec when present (it is a LangGraph dependency)
    import orjson

    def _dumps(obj: Any, sort_keys: bool = False) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else 0)

    _loads = orjson.loads
except ImportError:  # pragma: no cover

    def _dumps(obj: Any, sort_keys: bool = False) -> bytes:
        return json.dumps(obj, sort_keys=sort_keys).encode()

    _loads = json.loads

PROBLEM_TAG = re.compile(r"\[problem (\d+)\]")


@dataclass
class SimConfig:
    """How the server draws and shapes its replies."""

    seed: int = 0
    rate: float = 100.0
    """Simulated decode rate of one sequence, tokens per second."""
    dist: str = "uniform"
    """How output lengths are drawn: "uniform" in [min_s, max_s] of decode time, or
    "lognormal" (heavy-tailed, as reasoning lengths are): median ``median_s``, log-sd
    ``sigma``; both seeded alike (see ``draw_key``)."""
    min_s: float = 2.0
    """Shortest decode time of the uniform draw."""
    max_s: float = 8.0
    median_s: float = 0.5
    """Median decode time of the lognormal draw."""
    sigma: float = 1.0
    """Log-standard deviation of the lognormal draw (1: the slowest of 16 is ~6x the median)."""
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
    """What seeds a call's draw besides ``seed`` and its arrival number n in its group:
    "prompt" (the sha256 of its ``messages``) or "round" (its problem and round); see
    the module docstring."""

    def __post_init__(self) -> None:
        if self.draw_key not in ("prompt", "round"):
            raise ValueError(f"draw_key must be prompt or round, got {self.draw_key!r}")


@dataclass
class Draw:
    tokens: int
    latency: float


@dataclass
class Arrival:
    """One request as the server sees it: where it belongs and what it drew."""

    group: str
    """sha256 of the request's ``messages``: requests with the same one form a group."""
    problem: int
    """N of its ``[problem N]`` tag, -1 without one."""
    round: int
    """Ordinal of its group among its problem's groups, in arrival order."""
    n: int
    """Arrival number within its group."""
    draw: Draw


class SimServer:
    """State of the simulated server: config, arrival counters and the log."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.arrivals: dict[str, int] = {}
        self.rounds: dict[int, dict[str, int]] = {}
        """Per problem, each group's round (its ordinal in arrival order)."""
        self.log: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections: set[Any] = set()
        self.streams = 0

    def reset(self, latency_scale: float | None = None) -> None:
        self.arrivals.clear()
        self.rounds.clear()
        self.log.clear()
        self.max_in_flight = self.in_flight
        self.connections.clear()
        self.streams = 0
        if latency_scale is not None:
            self.config.latency_scale = latency_scale

    def arrive(self, messages: list[dict[str, Any]], canonical: bytes) -> Arrival:
        """Counts a request (``canonical``: its ``messages`` as bytes) and draws for it."""
        group = hashlib.sha256(canonical).hexdigest()
        n = self.arrivals.get(group, 0)
        self.arrivals[group] = n + 1
        problem = _problem(messages)
        groups = self.rounds.setdefault(problem, {})
        round_ = groups.setdefault(group, len(groups))
        key = group if self.config.draw_key == "prompt" else f"p{problem}:r{round_}"
        return Arrival(group, problem, round_, n, self.draw(key, n))

    def draw(self, key: str, n: int) -> Draw:
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{key}:{n}")
        if cfg.dist == "lognormal":
            seconds = cfg.median_s * math.exp(cfg.sigma * rng.gauss(0.0, 1.0))
            tokens = max(1, round(seconds * cfg.rate))
            return Draw(tokens, (cfg.ttft_s + tokens / cfg.rate) * cfg.latency_scale)
        if cfg.dist != "uniform":
            raise ValueError(f"dist must be uniform or lognormal, got {cfg.dist!r}")
        low = max(1, round(cfg.min_s * cfg.rate))
        high = max(low, round(cfg.max_s * cfg.rate))
        tokens = rng.randint(low, high)
        return Draw(tokens, (cfg.ttft_s + tokens / cfg.rate) * cfg.latency_scale)

    def content(self, group: str, n: int, tokens: int) -> tuple[str, str]:
        """Thinking and conclusion; the total length is distinct for each n (< 1024)."""
        cfg = self.config
        body = tokens * cfg.bytes_per_token
        think_len = (body // 1024) * 1024 + n % 1024
        thinking = ("lorem ipsum " * (think_len // 12 + 1))[:think_len]
        head = f"Conclusion {group[:8]}-{n}: "
        answer = f" The answer is \\boxed{{{int(group[:6], 16) % 97 + n}}}."
        pad = max(0, cfg.conclusion_bytes - len(head) - len(answer))
        conclusion = head + ("because " * (pad // 8 + 1))[:pad] + answer
        return thinking, conclusion


def _problem(messages: list[dict[str, Any]]) -> int:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            found = PROBLEM_TAG.search(text)
            return int(found.group(1)) if found else -1
    return -1


def make_app(sim: SimServer) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        raw = await request.read()
        body = _loads(raw)
        messages = body.get("messages") or []
        # The bytes of `messages` as sent: the prefix a vLLM server would cache.
        canonical = _dumps(messages, sort_keys=True)
        arrival = sim.arrive(messages, canonical)
        group, n, draw = arrival.group, arrival.n, arrival.draw
        thinking, conclusion = sim.content(group, n, draw.tokens)
        content = f"<think>{thinking}</think>{conclusion}"
        usage = {
            "prompt_tokens": len(canonical) // 4,
            "completion_tokens": draw.tokens,
            "total_tokens": len(canonical) // 4 + draw.tokens,
        }
        peer = request.transport.get_extra_info("peername") if request.transport else None
        sim.connections.add(peer)
        sim.in_flight += 1
        sim.max_in_flight = max(sim.max_in_flight, sim.in_flight)
        entry = {
            "problem": arrival.problem,
            "group": group[:16],
            "round": arrival.round,
            "n": n,
            "tokens": draw.tokens,
            "latency": draw.latency,
            "received": received,
            "sent": None,
            "stream": bool(body.get("stream")),
            "bytes_in": len(raw),
        }
        sim.log.append(entry)
        try:
            if body.get("stream"):
                return await _stream(request, body, entry, draw, content, usage)
            wait = draw.latency - (time.monotonic() - received)
            if wait > 0:
                await asyncio.sleep(wait)
            payload = {
                "id": f"chatcmpl-{len(sim.log)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "sim"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            response = web.Response(body=_dumps(payload), content_type="application/json")
            entry["sent"] = time.monotonic()
            return response
        finally:
            sim.in_flight -= 1

    async def _stream(
        request: web.Request,
        body: dict[str, Any],
        entry: dict[str, Any],
        draw: Draw,
        content: str,
        usage: dict[str, int],
    ) -> web.StreamResponse:
        sim.streams += 1
        cfg = sim.config
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{len(sim.log)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "sim"),
        }

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            await response.write(
                b"data: " + _dumps({**base, "choices": choices, **extra}) + b"\n\n"
            )

        received = entry["received"]
        chunks = max(1, int(draw.latency / cfg.stream_interval_s)) if draw.latency > 0 else 1
        step = -(-len(content) // chunks)
        for i in range(chunks):
            due = received + draw.latency * (i + 1) / chunks
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            piece = content[i * step : (i + 1) * step]
            if piece:
                await send([{"index": 0, "delta": {"content": piece}}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        entry["sent"] = time.monotonic()
        await response.write_eof()
        return response

    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "sim", "object": "model", "owned_by": "sim"}]}
        )

    async def reset(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        sim.reset(data.get("latency_scale"))
        return web.json_response({"ok": True, "config": asdict(sim.config)})

    async def log(_: web.Request) -> web.Response:
        return web.Response(body=_dumps(sim.log), content_type="application/json")

    async def stats(_: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return web.json_response(
            {
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "max_rss_kb": usage.ru_maxrss,
                "requests": len(sim.log),
                "max_in_flight": sim.max_in_flight,
                "connections": len(sim.connections),
                "streams": sim.streams,
                "pid": os.getpid(),
            }
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/sim/reset", reset)
    app.router.add_get("/sim/log", log)
    app.router.add_get("/sim/stats", stats)
    return app


def raise_fd_limit() -> None:
    """Thousands of sockets in flight need more than the usual soft limit of 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: SimConfig, host: str, port: int, ready: Any = None) -> None:
    raise_fd_limit()
    sim = SimServer(config)
    runner = web.AppRunner(make_app(sim), access_log=None, handle_signals=False)
    await runner.setup()
    # A deep backlog: a thousand clients connecting at once must not wait for SYN retries.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    if ready is not None:
        ready(sock.getsockname()[1])
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_forever(config: SimConfig, host: str, port: int, ready: Any = None) -> None:
    """Serves on uvloop when it is installed (the server must not be the bottleneck)."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(serve(config, host, port, ready))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}", help="SimConfig fields as JSON")
    args = parser.parse_args(argv)
    config = SimConfig(**json.loads(args.config))

    def ready(port: int) -> None:
        print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)

    try:
        run_forever(config, args.host, args.port, ready)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
