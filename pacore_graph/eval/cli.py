"""``pacore eval``: PaCoRe and its baselines on a benchmark file, graded, with the paper's table.

Imports nothing of the ``eval`` extra (math-verify, matplotlib) at import time, because
``pacore solve`` imports this module to register the subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai

from pacore_graph.context import context_from_options
from pacore_graph.errors import PaCoReError
from pacore_graph.rounds import PRESETS


class EvalCLIError(Exception):
    """A problem to report in one line, without a traceback."""


def add_parser(sub: Any) -> None:
    """Registers ``pacore eval`` on the ``pacore`` subcommands."""
    p = sub.add_parser(
        "eval",
        help="grade PaCoRe and baselines on a benchmark: accuracy, TTC, table and plot",
        description="Run PaCoRe settings and baselines on every problem of a JSONL file, "
        "grade the answers (math-verify, string-match fallback) and write the paper-style "
        "table (acc (TTC k)), an accuracy-vs-TTC plot and per-problem rows.",
    )
    p.add_argument(
        "problems",
        type=Path,
        help="JSONL: the reference's rows (id, messages, ground_truth.answer, category) "
        "or {problem, answer}",
    )
    p.add_argument(
        "--rounds",
        action="append",
        help=f"a PaCoRe setting: {'|'.join(PRESETS)} or N,N,... ([1] appended); repeat for "
        "more rows (default: low unless only baselines are given)",
    )
    p.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="single (one trajectory) or sc@N (majority vote over N); repeatable",
    )
    p.add_argument("--runs", type=int, default=1, help="runs per setting (pass@1 is averaged)")
    p.add_argument(
        "--pool",
        type=int,
        help="evaluation shortcut: generate N round-1 trajectories per problem once and draw "
        "each run's K_1 (and each baseline's samples) from them",
    )
    p.add_argument("--pool-seed", type=int, default=0, help="seed of the draws from the pool")
    p.add_argument("--out", type=Path, default=Path("eval-results"), help="output folder")
    p.add_argument("--limit", type=int, help="only the first N problems")
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="model calls in flight at once, over all problems and settings (default 64)",
    )
    p.add_argument(
        "--redis-url",
        help="checkpoint every thread in Redis; the same command resumes an interrupted eval",
    )
    p.add_argument(
        "--base-url",
        action="append",
        help="OpenAI-compatible endpoint; repeat it to spread calls over replicas",
    )
    p.add_argument(
        "--backend",
        choices=["openai", "embedded"],
        help="openai: the --base-url endpoint(s) (default when given); embedded: a small "
        "CPU model started by pacore (default otherwise)",
    )
    p.add_argument("--model", help="model name (default: the endpoint's first model)")
    p.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY)")
    p.add_argument("--timeout", type=float, help="seconds per model call")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (default 1.0)")
    p.add_argument("--max-tokens", type=int, help="tokens per call (default: server's limit)")
    p.add_argument("--seed", type=int, help="seed of the reference-order shuffle (default 42)")
    p.add_argument("--compaction", choices=["reference", "boxed"], help="compaction rule")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")


class _LineProgress:
    """Progress without tqdm: a line per finished problem."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.count, self.tokens = total, 0, 0, 0

    def trajectories(self, count: int, tokens: int) -> None:
        self.count += count
        self.tokens += tokens

    def run_done(self) -> None:
        pass

    def problem_done(self) -> None:
        self.done += 1
        print(
            f"eval: {self.done}/{self.total} problems, {self.count} trajectories, "
            f"{self.tokens} tokens",
            file=sys.stderr,
        )

    def close(self) -> None:
        pass


class _BarProgress:
    """A tqdm bar over problems; the postfix counts runs done, and the trajectories and
    completion tokens the backend generated so far."""

    def __init__(self, total: int, runs_total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="problem", desc="eval", file=sys.stderr)
        self.runs_total, self.runs, self.count, self.tokens = runs_total, 0, 0, 0

    def _postfix(self) -> None:
        # Strings, so tqdm does not print 10000 tokens as 1e+4; redrawn at tqdm's own pace.
        self.bar.set_postfix(
            runs=f"{self.runs}/{self.runs_total}",
            traj=str(self.count),
            tokens=f"{self.tokens:,}",
            refresh=False,
        )

    def trajectories(self, count: int, tokens: int) -> None:
        self.count += count
        self.tokens += tokens
        self._postfix()

    def run_done(self) -> None:
        self.runs += 1
        self._postfix()

    def problem_done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress(args: argparse.Namespace, problems: int, runs_total: int) -> Any:
    enabled = sys.stderr.isatty() if args.progress is None else args.progress
    if not enabled:
        return None
    try:
        return _BarProgress(problems, runs_total)
    except ImportError:  # tqdm is optional: fall back to plain lines
        return _LineProgress(problems)


@contextlib.contextmanager
def _backend(args: argparse.Namespace) -> Iterator[Any]:
    from pacore_graph.backends.select import backend_for_args

    with backend_for_args(args) as model:
        if args.base_url and args.model:
            with contextlib.suppress(openai.APIStatusError):  # a server without /models is fine
                model.list_models()  # an unreachable endpoint fails now, in one line
        yield model


@contextlib.asynccontextmanager
async def _checkpointer(url: str | None) -> AsyncIterator[Any]:
    if not url:
        yield None
        return
    from pacore_graph.checkpoints import AsyncRedisSaver

    async with AsyncRedisSaver.from_conn_string(url) as saver:
        try:
            await saver.asetup()  # Redis down fails before any model call
        except ConnectionError as exc:
            raise EvalCLIError(str(exc)) from None
        yield saver


async def _eval(args: argparse.Namespace) -> int:
    from pacore_graph.eval._deps import require
    from pacore_graph.eval.dataset import load_problems
    from pacore_graph.eval.report import write_report
    from pacore_graph.eval.runner import EvalSpec, run_eval
    from pacore_graph.eval.settings import build_settings

    # Everything that can be wrong with the input fails before any model call.
    require("math_verify", "pacore eval's grading")
    if not args.no_plot:
        require("matplotlib", "pacore eval's plot")
    if args.limit is not None and args.limit < 1:
        raise EvalCLIError("--limit must be at least 1")
    try:
        problems = load_problems(args.problems, limit=args.limit)
    except OSError as exc:
        raise EvalCLIError(f"cannot read {args.problems}: {exc.strerror or exc}") from None
    rounds = args.rounds if args.rounds is not None else ([] if args.baseline else ["low"])
    settings = build_settings(rounds, args.baseline)
    spec = EvalSpec(  # checks runs, concurrency and pool size
        settings,
        runs=args.runs,
        concurrency=args.concurrency,
        pool=args.pool,
        pool_seed=args.pool_seed,
    )
    async with _checkpointer(args.redis_url) as saver:
        with _backend(args) as model:
            spec = dataclasses.replace(
                spec,
                concurrency=args.concurrency,  # the embedded backend may lower it
                context={k: v for k, v in context_from_options(args).items() if k != "rounds"},
                namespace=str(getattr(model, "model", "")),
            )
            progress = _progress(args, len(problems), len(problems) * len(settings) * args.runs)
            try:
                result = await run_eval(
                    model, problems, spec, checkpointer=saver, progress=progress
                )
            finally:
                if progress is not None:
                    progress.close()
    table, paths = write_report(
        result, args.out, title=args.problems.name, plot_png=not args.no_plot
    )
    print(table, end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def _describe(exc: BaseException, resumable: bool) -> str:
    if isinstance(exc, openai.APIConnectionError):
        text = f"cannot reach the model endpoint: {exc.__cause__ or exc}"
    elif isinstance(exc, openai.APIStatusError):
        text = f"the model endpoint answered {exc.status_code}: {exc.message}"
    else:
        text = str(exc)
    if resumable and isinstance(exc, openai.OpenAIError | ConnectionError):
        text += "; finished work is checkpointed: rerun the same command to resume"
    return text


def run(args: argparse.Namespace) -> int:
    """Runs ``pacore eval``; returns the exit status (errors are one line on stderr)."""
    resumable = bool(args.redis_url)
    try:
        return asyncio.run(_eval(args))
    except (EvalCLIError, PaCoReError, ImportError, ValueError) as exc:
        print(f"pacore: error: {_describe(exc, False)}", file=sys.stderr)
        return 2
    except (openai.OpenAIError, ConnectionError, OSError) as exc:
        print(f"pacore: error: {_describe(exc, resumable)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = "; rerun the same command to resume" if resumable else ""
        print(f"pacore: interrupted{hint}", file=sys.stderr)
        return 130
