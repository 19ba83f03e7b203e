"""The ideal wall time of a run, from the simulated server's log of that same run.

A round cannot end before its slowest trajectory, so for one problem the ideal is the sum
over rounds of the slowest call's drawn latency; for problems run at once, the largest of
those sums. ``analyze`` also says where the time above it went (start lag, gaps between
rounds, dispatch spread), and ``draws`` gives what identifies a run's prompts.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from typing import Any


def analyze(log: list[dict[str, Any]], result: dict[str, Any]) -> dict[str, Any]:
    """Ideal time from the server's log, and where the time above it went."""
    t0 = result["t0"]
    groups: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for entry in log:
        if entry["received"] < t0:  # the warm-up run
            continue
        groups[(entry["problem"], entry["group"])].append(entry)
    per_problem: dict[int, list[list[dict]]] = defaultdict(list)
    for (problem, _), entries in groups.items():
        per_problem[problem].append(entries)
    ideals, overheads, starts, gaps, spreads, late, ends = [], [], [], [], [], [], []
    for problem, rounds in per_problem.items():
        rounds.sort(key=lambda es: min(e["received"] for e in es))
        ideal = sum(max(e["latency"] for e in es) for es in rounds)
        ideals.append(ideal)
        starts.append(min(e["received"] for e in rounds[0]) - t0)
        for es in rounds:
            first = min(e["received"] for e in es)
            spreads.append(max(e["received"] for e in es) - first)
            late += [e["sent"] - e["received"] - e["latency"] for e in es if e["sent"]]
        for a, b in itertools.pairwise(rounds):
            gaps.append(min(e["received"] for e in b) - max(e["sent"] for e in a))
        if 0 <= problem < len(result["finished"]) and result["finished"][problem]:
            finish = result["finished"][problem] - t0
            overheads.append(finish - ideal)
            ends.append(result["finished"][problem] - max(e["sent"] for e in rounds[-1]))
    ideal = max(ideals, default=0.0)

    def ms(values: list[float], fn=max) -> float | None:
        return round(fn(values) * 1000, 2) if values else None

    return {
        "requests": sum(1 for e in log if e["received"] >= t0),
        "ideal_s": ideal,
        "problem_overhead_ms_mean": ms(overheads, statistics.fmean),
        "problem_overhead_ms_max": ms(overheads),
        "start_lag_ms_min": ms(starts, min),
        "start_lag_ms_max": ms(starts),
        "round_gap_ms_mean": ms(gaps, statistics.fmean),
        "round_gap_ms_max": ms(gaps),
        "dispatch_spread_ms_max": ms(spreads),
        "server_late_ms_max": ms(late),
        "end_lag_ms_max": ms(ends),
    }


def draws(log: list[dict[str, Any]], t0: float) -> list[tuple[str, int, float]]:
    """The run's calls as (prompt group, arrival number, drawn latency), sorted: two runs
    sent byte-identical prompts in the same groups exactly when these lists are equal (the
    server keys each draw on the sha256 of the request's messages)."""
    return sorted((e["group"], e["n"], e["latency"]) for e in log if e["received"] >= t0)
