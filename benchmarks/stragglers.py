"""Straggler control on heavy-tailed latencies, against the official PaCoRe pipeline.

Every call of the simulated server (``benchmarks/simserver.py``, ``dist="lognormal"``)
decodes for a seeded lognormal time: median ``--median`` seconds, log-sd ``--sigma``
(about 1, as reasoning lengths: the slowest of 16 takes ~6x the median, of 32 ~7x).
Draws are keyed by (problem, round, arrival number) (``draw_key="round"``), not by the
prompt: a policy drops references, so its later rounds' prompts differ from the
official pipeline's, yet every contender meets the same latencies in each round of
each problem (the server is reset before each run).

Each workload (P problems started together) runs under every contender in one process,
one after the other, the order rotated each repeat. Contenders: the official
stepfun-ai/PaCoRe pipeline, driven by ``workload.run_official`` (``official.py``: never
copied, imported from its extract, ``--official DIR`` or ``$PACORE_OFFICIAL``), the
graph with the policy off (faithful, as the official), and the graph with a few
(q, f, t_min). Both are timed by ``workload``'s clock.

Reported per workload and contender: wall time (mean of repeats), its ratio to the
official pipeline's in the same repeat, and the fraction of exploration trajectories
the policy stopped (the price of the time saved: those are missing from the next
round's references).

    python benchmarks/stragglers.py [--official /work/pacore-official] [--repeats 2]

Writes ``benchmarks/results/stragglers.{json,md}`` and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from official import official_dir  # noqa: E402
from report import RESULTS, fmt, loadavg, machine_line, run_info, table, write_results  # noqa: E402
from services import Sim  # noqa: E402
from workload import WARMUP, measure, problem_text, run_official  # noqa: E402

WORKLOADS: list[tuple[str, int, list[int]]] = [
    ("16 x [16]", 16, [16]),
    ("16 x [32, 4]", 16, [32, 4]),
]
"""(name, problems, exploration rounds); the final [1] is appended by both pipelines."""

T_MIN = 0.25
"""t_min of the policies, scaled as the latencies are (half the 0.5 s median)."""

POLICIES: list[tuple[str, tuple[float, float, float] | None]] = [
    ("off", None),
    ("q=0.5 f=2", (0.5, 2.0, T_MIN)),
    ("q=0.75 f=1.5", (0.75, 1.5, T_MIN)),
    ("q=0.75 f=2", (0.75, 2.0, T_MIN)),
    ("q=0.9 f=2", (0.9, 2.0, T_MIN)),
    ("q=0.9 f=3", (0.9, 3.0, T_MIN)),
]
"""Graph contenders: (label, (q, f, t_min) or None for the policy off)."""


class Graph:
    """pacore-graph, all problems started together with asyncio.gather."""

    def __init__(self, base_url: str) -> None:
        from pacore_graph import ChatOpenAICompatible, create_pacore_graph

        self.model = ChatOpenAICompatible(base_url=base_url, model="sim", api_key="sim")
        self.create = create_pacore_graph

    async def run(
        self, problems: int, rounds: list[int], policy: tuple[float, float, float] | None
    ) -> dict[str, Any]:
        graph = self.create(self.model, rounds=rounds).compile()
        context: dict[str, Any] | None = None
        if policy is not None:
            keys = ("straggler_quantile", "straggler_factor", "straggler_min_seconds")
            context = dict(zip(keys, policy, strict=True))
        config = {"max_concurrency": max(rounds) * 2}
        runs: list[Any] = []

        async def one(text: str) -> None:
            out = await graph.ainvoke({"messages": [("user", text)]}, config, context=context)
            runs.append(out["pacore"])

        result = await measure(
            {},
            lambda: asyncio.gather(
                *(one(problem_text(i)) for i in range(problems)), return_exceptions=True
            ),
        )
        exploration = [t for r in runs for t in r["trajectories"] if t["round"] <= len(rounds)]
        result["trajectories"] = len(exploration)
        result["stopped"] = sum(t["status"] == "stopped" for t in exploration)
        result["n_errors"] += sum(t["status"] == "failed" for t in exploration)
        return result


async def official_run(directory: Path, base_url: str, problems: int, rounds: list[int]) -> Any:
    """The official pipeline through ``workload.run_official`` (its warm-up is off the clock);
    its trajectories counted as the graph's are: exploration rounds only."""
    spec = {"official": str(directory), "base_url": base_url, "rounds": rounds}
    result = await run_official(spec, [problem_text(i) for i in range(problems)])
    result["trajectories"] = problems * sum(rounds)
    result["stopped"] = 0
    return result


# -- the benchmark ------------------------------------------------------------------------


async def bench(args: argparse.Namespace, official: Path) -> dict[str, Any]:
    config = {
        "seed": args.seed,
        "dist": "lognormal",
        "median_s": args.median,
        "sigma": args.sigma,
        "draw_key": "round",
    }
    info = run_info(
        simulation={**config, "t_min_s": T_MIN},
        repeats=args.repeats,
        command="python benchmarks/stragglers.py " + " ".join(sys.argv[1:]),
    )
    sim = Sim(config)
    try:
        graph = Graph(sim.base_url)
        # Warm-up, not measured: imports, client set-up, the first graph compile.
        await (
            graph.create(graph.model, rounds=[2])
            .compile()
            .ainvoke({"messages": [("user", WARMUP)]}, {"max_concurrency": 4})
        )
        names = ["official", *(label for label, _ in POLICIES)]
        policies = dict(POLICIES)
        rows: list[dict[str, Any]] = []
        for workload, problems, rounds in WORKLOADS:
            runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            for repeat in range(args.repeats):
                shift = repeat % len(names)
                for name in names[shift:] + names[:shift]:
                    sim.reset(1.0)
                    if name == "official":
                        result = await official_run(official, sim.base_url, problems, rounds)
                    else:
                        result = await graph.run(problems, rounds, policies[name])
                    if result["n_errors"]:
                        raise RuntimeError(f"{name} failed: {result['errors']}")
                    result["repeat"] = repeat
                    runs[name].append(result)
                    print(
                        f"{workload} repeat {repeat + 1}: {name:>13} {result['wall_s']:6.2f} s, "
                        f"{result['stopped']}/{result['trajectories']} stopped",
                        file=sys.stderr,
                    )
            base = {r["repeat"]: r["wall_s"] for r in runs["official"]}
            for name in names:
                policy = policies.get(name)
                ratios = [r["wall_s"] / base[r["repeat"]] for r in runs[name]]
                rows.append(
                    {
                        "workload": workload,
                        "contender": name,
                        "policy": None
                        if policy is None
                        else dict(zip(("q", "f", "t_min"), policy, strict=True)),
                        "wall_s": statistics.fmean(r["wall_s"] for r in runs[name]),
                        "walls_s": [r["wall_s"] for r in runs[name]],
                        "vs_official": statistics.fmean(ratios),
                        "ratios": ratios,
                        "dropped": sum(r["stopped"] for r in runs[name])
                        / sum(r["trajectories"] for r in runs[name]),
                    }
                )
    finally:
        sim.stop()
    info["load_after"] = loadavg()
    info["rows"] = rows
    return info


def render(data: dict[str, Any]) -> str:
    sim = data["simulation"]
    lines = [
        "# Straggler control on heavy-tailed latencies, against the official pipeline",
        "",
        f"Lognormal decode times (median {sim['median_s']} s, sigma {sim['sigma']}, seed "
        f"{sim['seed']}, keyed by problem and round), t_min = {sim['t_min_s']} s; "
        f"{data['repeats']} repeats, contenders interleaved. {machine_line(data)}",
        "",
        f"`{data['command'].strip()}`",
        "",
    ]
    lines += table(
        ["workload", "contender", "wall s (mean)", "/ official (each repeat)", "dropped"],
        [
            [
                r["workload"],
                r["contender"],
                r["wall_s"],
                f"{fmt(r['vs_official'])} ({', '.join(fmt(x) for x in r['ratios'])})",
                f"{100 * r['dropped']:.1f}%",
            ]
            for r in data["rows"]
        ],
        "llrrr",
    )
    lines += [
        "",
        "Every contender meets the same latencies in each round of each problem: the "
        "simulated server keys a draw by (problem, round, arrival number), not by the "
        'prompt, which a policy changes by dropping references (`draw_key="round"`, '
        "`benchmarks/simserver.py`). What a policy saves is then its own doing, in every "
        "round. The round's slowest call still sets its length for the official "
        "pipeline and the graph with the policy off.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official", help="the official pipeline's extract (default $PACORE_OFFICIAL)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--median", type=float, default=0.5, help="median decode seconds")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal log-sd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data = asyncio.run(bench(args, official_dir(args.official)))
    text = render(data)
    write_results("stragglers", data, text, args.out)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
