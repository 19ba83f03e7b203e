"""A cProfile dump summarized: own time by package, top functions, as data and Markdown."""

from __future__ import annotations

import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


PACKAGES = (
    ("pacore_graph", "pacore_graph"),
    ("langgraph", "langgraph"),
    ("langchain_core", "langchain_core"),
    ("openai", "openai"),
    ("httpcore", "httpx/httpcore"),
    ("httpx", "httpx/httpcore"),
    ("httpcore2", "httpx/httpcore"),
    ("httpx2", "httpx/httpcore"),
    ("aiohttp", "aiohttp"),
    ("yarl", "aiohttp"),
    ("multidict", "aiohttp"),
    ("redis", "redis-py"),
    ("email", "email (header parsing)"),
    ("inspect", "inspect (signature checks)"),
    ("h11", "h11"),
    ("anyio", "anyio"),
    ("pydantic", "pydantic"),
    ("ormsgpack", "ormsgpack"),
    ("asyncio", "asyncio"),
    ("uuid", "uuid"),
    ("json", "json"),
    ("copy", "copy"),
    ("typing", "typing"),
    ("contextvars", "contextvars"),
)


def package(filename: str) -> str:
    if filename.startswith("~"):
        return "C builtins"
    if filename.startswith("<frozen "):
        return filename.strip("<>").split()[-1]
    for needle, name in PACKAGES:
        if f"/{needle}/" in filename or filename.endswith(f"/{needle}.py"):
            return name
    return "other"


def profile_summary(path: str, top: int = 25) -> dict[str, Any]:
    stats = pstats.Stats(path)
    total = stats.total_tt
    by_package: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        by_package[package(filename)] += tottime
        rows.append((cumtime, tottime, ncalls, f"{_short(filename)}:{line}({func})"))
    rows.sort(reverse=True)
    cumulative = [
        {"cum_s": round(c, 3), "own_s": round(t, 3), "calls": n, "function": f}
        for c, t, n, f in rows
        if not f.startswith(("asyncio/", "<")) and "gather" not in f
    ][:top]
    own = sorted(rows, key=lambda r: r[1], reverse=True)[:top]
    return {
        "total_s": round(total, 3),
        "by_package": {
            k: round(v, 3) for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])
        },
        "top_cumulative": cumulative,
        "top_own": [
            {"own_s": round(t, 3), "cum_s": round(c, 3), "calls": n, "function": f}
            for c, t, n, f in own
        ],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(ROOT) + "/"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    return filename


def render_profile(title: str, summary: dict[str, Any], share: float = 0.005) -> list[str]:
    """Markdown lines: own time by package (those above ``share`` of the total), then the
    top functions by cumulative and by own time."""
    total = summary["total_s"] or 1e-9
    out = [
        f"## Profile: {title} ({summary['total_s']:.2f} s profiled CPU)",
        "",
        "Own time by package:",
        "",
        "| package | own s | share |",
        "|---|---:|---:|",
    ]
    for name, secs in summary["by_package"].items():
        if secs >= share * total:
            out.append(f"| {name} | {secs:.3f} | {100 * secs / total:.1f}% |")
    out += [
        "",
        "Top functions by cumulative time:",
        "",
        "| cum s | own s | calls | function |",
        "|---:|---:|---:|---|",
    ]
    out += [
        f"| {r['cum_s']:.3f} | {r['own_s']:.3f} | {r['calls']} | `{r['function']}` |"
        for r in summary["top_cumulative"]
    ]
    out += [
        "",
        "Top functions by own time:",
        "",
        "| own s | cum s | calls | function |",
        "|---:|---:|---:|---|",
    ]
    out += [
        f"| {r['own_s']:.3f} | {r['cum_s']:.3f} | {r['calls']} | `{r['function']}` |"
        for r in summary["top_own"]
    ]
    return out
