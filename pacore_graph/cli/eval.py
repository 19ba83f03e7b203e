"""``pacore eval``: PaCoRe and its baselines on a benchmark file, graded, with the paper's table.
Imports of the ``eval`` extra and tqdm wait for `run`: every ``pacore`` command imports this."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacore_graph.cli.options import (
    COUNT,
    ROUNDS_HELP,
    CLIError,
    add_command,
    backend_description,
    backend_line,
    open_run,
    secrets_of,
)
from pacore_graph.context import DEFAULTS, context_from_options, merge_context
from pacore_graph.rounds import check_round_bounds
from pacore_graph.validation import check_settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from pacore_graph.eval.dataset import Problem
    from pacore_graph.eval.runner import EvalSpec


def add_parser(sub: Any) -> None:
    """Registers ``pacore eval`` on the ``pacore`` subcommands."""
    p = add_command(
        sub,
        "eval",
        "grade PaCoRe and baselines on a benchmark: accuracy, TTC, table and plot",
        "Run PaCoRe settings and baselines on every problem of a JSONL file, "
        "grade the answers (math-verify, string-match fallback) and write the paper-style "
        "table (acc (TTC k)), an accuracy-vs-TTC plot and per-problem rows.",
    )
    add_problem_options(p)
    p.add_argument(
        "--rounds",
        action="append",
        help=f"a PaCoRe setting, {ROUNDS_HELP}; repeat for more rows (default: low unless "
        "only baselines are given)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        help="name of a --rounds row in the table and plot, the n-th label for the n-th "
        '--rounds (e.g. --rounds 8 --label "parallel [8]")',
    )
    p.add_argument(
        "--marker",
        action="append",
        metavar="REGEX",
        help="a cross-checking marker counted in synthesis rounds (case-insensitive, at a "
        "word start); repeat for more; replaces the default list: reference, ref N",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="single (one trajectory) or sc@N (majority vote over N); repeatable",
    )
    p.add_argument("--runs", type=COUNT, default=1, help="runs per setting (pass@1 is averaged)")
    p.add_argument(
        "--pool",
        type=COUNT,
        help="evaluation shortcut: generate N round-1 trajectories per problem once and draw "
        "each run's K_1 (and each baseline's samples) from them",
    )
    p.add_argument("--pool-seed", type=int, default=0, help="seed of the draws from the pool")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("eval-results"),
        help="output folder: tables, plot, rows and manifest.json (what was run)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")


def add_problem_options(p: argparse.ArgumentParser) -> None:
    """The problem file and ``--limit``, as `checked_context` reads them."""
    p.add_argument(
        "problems",
        type=Path,
        help="JSONL: the reference's rows (id, messages, ground_truth.answer, category) "
        "or {problem, answer}",
    )
    p.add_argument("--limit", type=COUNT, help="only the first N problems")


class BarProgress:
    """A tqdm bar over problems; the postfix counts runs (when ``runs_total`` is given),
    calls in flight, trajectories and completion tokens, redrawn as each changes."""

    def __init__(self, total: int, runs_total: int | None, desc: str = "eval") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="problem", desc=desc, file=sys.stderr)
        self.runs_total, self.runs, self.in_flight, self.count, self.tokens = runs_total, 0, 0, 0, 0

    def _postfix(self) -> None:
        # Strings, so tqdm does not print 10000 tokens as 1e+4.
        runs = {"runs": f"{self.runs}/{self.runs_total}"} if self.runs_total else {}
        self.bar.set_postfix(
            **runs, calls=str(self.in_flight), traj=str(self.count), tokens=f"{self.tokens:,}"
        )

    def calls(self, in_flight: int) -> None:
        self.in_flight = in_flight
        self._postfix()

    def trajectories(self, count: int, tokens: int) -> None:
        self.count, self.tokens = self.count + count, self.tokens + tokens
        self._postfix()

    def run_done(self) -> None:
        self.runs += 1
        self._postfix()

    def problem_done(self) -> None:
        self.bar.update(1)


def checked_context(args: argparse.Namespace) -> tuple[list[Problem], dict[str, Any]]:
    """The problems and the run settings (``rounds`` aside) the options give, checked."""
    from pacore_graph.eval.dataset import load_problems

    try:
        problems = load_problems(args.problems, limit=args.limit)
    except OSError as exc:
        raise CLIError(f"cannot read {args.problems}: {exc.strerror or exc}") from None
    context = {k: v for k, v in context_from_options(args).items() if k != "rounds"}
    check_settings(merge_context(DEFAULTS, context))
    return problems, context


@contextlib.asynccontextmanager
async def opened(
    args: argparse.Namespace, spec: EvalSpec, problems: int
) -> AsyncIterator[tuple[BaseChatModel, Any, EvalSpec, dict[str, Any], BarProgress | None]]:
    """`open_run` with the backend line on stderr and ``spec`` completed for the backend;
    with progress shown, a line before the backend starts and then a bar."""
    shown = sys.stderr.isatty() if args.progress is None else args.progress
    if shown:
        print(f"pacore {args.command}: {problems} problems; starting the backend", file=sys.stderr)
    async with open_run(args) as (model, saver):
        backend = backend_description(args, model)
        print(backend_line(args, model), file=sys.stderr)
        # The embedded backend may have lowered --concurrency.
        namespace = str(getattr(model, "model", ""))
        spec = dataclasses.replace(spec, concurrency=args.concurrency, namespace=namespace)
        runs_total = problems * len(spec.settings) * spec.runs or None  # curate has no runs
        progress = BarProgress(problems, runs_total, args.command) if shown else None
        try:
            yield model, saver, spec, backend, progress
        finally:
            if progress is not None:
                progress.bar.close()


async def run(args: argparse.Namespace) -> int:
    """Runs ``pacore eval``; writes the table, plot and rows (errors reach ``pacore``'s main)."""
    from pacore_graph.eval._deps import require
    from pacore_graph.eval.manifest import build_manifest, command_line, dataset_info, now
    from pacore_graph.eval.report import wall_stats, write_report
    from pacore_graph.eval.runner import EvalSpec, run_eval
    from pacore_graph.eval.settings import build_settings

    # Everything that can be wrong with the input fails before any model call.
    require("math_verify", "pacore eval's grading")
    if not args.no_plot:
        require("matplotlib", "pacore eval's plot")
    problems, context = checked_context(args)
    rounds = args.rounds if args.rounds is not None else ([] if args.baseline else ["low"])
    settings = build_settings(rounds, args.baseline, args.label)
    checked = merge_context(DEFAULTS, context)
    for setting in settings:
        check_round_bounds(list(setting.round_vector), checked.max_k, checked.max_trajectories)
    spec = EvalSpec(  # checks runs, concurrency and pool size
        settings,
        runs=args.runs,
        concurrency=args.concurrency,
        pool=args.pool,
        pool_seed=args.pool_seed,
        context=context,
        **({"markers": args.marker} if args.marker else {}),
    )
    started_at = now()
    async with opened(args, spec, len(problems)) as (model, saver, spec, backend, progress):
        result = await run_eval(model, problems, spec, checkpointer=saver, progress=progress)
    manifest = build_manifest(
        backend=backend,
        dataset=dataset_info(args.problems, len(problems)),
        spec=spec,
        command=command_line(getattr(args, "argv", []), secrets_of(args)),
        started_at=started_at,
        finished_at=now(),
        secrets=secrets_of(args),
        wall=wall_stats(result),
    )
    model_name = backend["model"]  # the plot's title: ``pacore-8b on aime25.jsonl``
    table, paths = write_report(
        result,
        args.out,
        title=f"{model_name} on {args.problems.name}" if model_name else args.problems.name,
        plot_png=not args.no_plot,
        manifest=manifest,
    )
    print(table, end="")
    print("\n" + paths["wall"].read_text(encoding="utf-8"), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
