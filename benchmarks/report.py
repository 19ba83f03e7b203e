"""What every benchmark report shares: the machine and its load, Markdown tables, the
median and range of repeats, and the result files under ``benchmarks/results/``."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("langgraph", "langchain-core", "openai", "httpx", "aiohttp", "redis")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> float:
    """The 1-minute load average (the machine may be shared: say how busy it was)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def machine() -> dict[str, Any]:
    """CPU model, cores, platform, Python and the versions of the packages on the path."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
    }


def run_info(**extra: Any) -> dict[str, Any]:
    """The start of a report's JSON: date, machine, load average before the run."""
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": loadavg(),
        **extra,
    }


def machine_line(info: dict[str, Any]) -> str:
    """One sentence on when and where: for the top of a report."""
    m = info["machine"]
    versions = ", ".join(f"{name} {m[name]}" for name in PACKAGES if name in m)
    after = f", {info['load_after']:.2f} after" if "load_after" in info else ""
    return (
        f"{info['date']}; {m['cpu']}, {m['cpus']} CPUs, {m['platform']}; Python {m['python']}, "
        f"{versions}. Load average {info['load_before']:.2f} before{after}."
    )


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def median_range(values: Sequence[float], digits: int = 3, unit: str = "") -> str:
    """``median (min-max)`` of repeats, or the one value."""
    if not values:
        return ""
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.{digits}f}{unit}"
    dash = " to " if min(values) < 0 else "-"  # "-4.5-5.7" would read as a subtraction
    return f"{mid:.{digits}f}{unit} ({min(values):.{digits}f}{dash}{max(values):.{digits}f})"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default l)."""
    marks = ["---:" if align[i : i + 1] == "r" else "---" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    out += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return out


def write_results(stem: str, info: dict[str, Any], text: str, directory: Path = RESULTS) -> Path:
    """``<directory>/<stem>.md`` (the text) and ``.json`` (``info``); returns the stem's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.md").write_text(text.rstrip("\n") + "\n")
    (directory / f"{stem}.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return directory / stem
