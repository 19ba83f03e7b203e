"""``pacore curate``: the paper's Stage-1 training-data filter on a problem file
(`pacore_graph.eval.curate`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from pacore_graph.cli.eval import add_problem_options, checked_context, opened
from pacore_graph.cli.options import COUNT, add_command, checked


def add_parser(sub: Any) -> None:
    """Registers ``pacore curate`` on the ``pacore`` subcommands."""
    p = add_command(
        sub,
        "curate",
        "keep the problems where naive aggregation fails (the paper's training-data filter)",
        "Generate (or reuse, as pacore eval --pool does) a pool of round-1 trajectories per "
        "problem, grade their compacted messages, and write one JSONL row per problem whose "
        "message accuracy is below --max-message-accuracy: the problem, the messages ready "
        "for a synthesis round, their grades, the ground truth and the message accuracy.",
    )
    add_problem_options(p)
    p.add_argument("--pool", type=COUNT, default=24, help="round-1 trajectories per problem")
    p.add_argument(
        "--max-message-accuracy",
        type=checked(Annotated[float, Field(gt=0, le=1)]),
        default=0.375,
        help="keep a problem when the share of right messages is strictly below this "
        "(default 0.375: the paper's 9/24)",
    )
    p.add_argument("--out", type=Path, required=True, help="the kept rows (JSONL)")


async def run(args: argparse.Namespace) -> int:
    """Runs ``pacore curate``: rows to ``--out``, the summary on stdout and in
    ``<out>.summary.json``."""
    from pacore_graph.eval._deps import require
    from pacore_graph.eval.curate import curate, summary_text
    from pacore_graph.eval.runner import EvalSpec

    require("math_verify", "pacore curate's grading")
    problems, context = checked_context(args)
    spec = EvalSpec([], concurrency=args.concurrency, pool=args.pool, context=context)
    async with opened(args, spec, len(problems)) as (model, saver, spec, _, progress):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", encoding="utf-8") as out:
            summary = await curate(
                model,
                problems,
                spec,
                out,
                max_message_accuracy=args.max_message_accuracy,
                checkpointer=saver,
                progress=progress,
            )
    path = args.out.with_name(args.out.name + ".summary.json")
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(summary_text(summary), end="")
    print(f"wrote {args.out}, {path}", file=sys.stderr)
    return 0
