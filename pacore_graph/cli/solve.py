"""``pacore solve``: answer one problem with PaCoRe, resumable on a Redis thread."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig

from pacore_graph.cli.options import CLIError, open_run, run_options
from pacore_graph.context import context_from_options
from pacore_graph.graph import create_pacore_graph
from pacore_graph.messages import last_user_index
from pacore_graph.record import to_record
from pacore_graph.rounds import PRESETS, resolve_rounds
from pacore_graph.threads import ThreadStatus, arun_thread, default_thread_id

DEMO_PROBLEM = (
    "A farmer plants 17 rows of apple trees with 23 trees in each row. "
    "How many trees does the farmer plant? Put the final answer in \\boxed{}."
)


def add_parser(sub: Any) -> None:
    """Registers ``pacore solve`` on the ``pacore`` subcommands."""
    solve = sub.add_parser("solve", parents=[run_options()], help="answer one problem")
    solve.add_argument("problem", nargs="?", help="the problem (the last user message)")
    solve.add_argument("--demo", action="store_true", help="solve a built-in problem")
    solve.add_argument("--messages", type=Path, help='JSON file: [{"role": ..., "content": ...}]')
    solve.add_argument(
        "--rounds",
        default="low",
        help=f"exploration rounds: {'|'.join(PRESETS)} or N,N,... ([1] is appended; default low)",
    )
    solve.add_argument(
        "--thread-id",
        help="thread to checkpoint into (default: derived from the problem and rounds)",
    )
    solve.add_argument("--json", action="store_true", help="print the full record as JSON")


def _messages(args: argparse.Namespace) -> list[BaseMessage]:
    raw: list[Any] = []
    if args.messages is not None:
        try:
            raw = json.loads(args.messages.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CLIError(f"cannot read messages file {args.messages}: {exc}") from None
        if not isinstance(raw, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in raw
        ):
            raise CLIError(
                f'{args.messages}: expected a JSON list of {{"role", "content"}} objects'
            )
    if args.problem is not None:
        raw.append({"role": "user", "content": args.problem})
    elif args.demo:
        raw.append({"role": "user", "content": DEMO_PROBLEM})
    if not raw:
        raise CLIError("no problem given: pass PROBLEM or --messages FILE.json")
    try:
        messages = convert_to_messages(raw)
    except (ValueError, NotImplementedError) as exc:
        raise CLIError(f"bad messages: {exc}") from None
    last_user_index(messages)  # no usable problem fails before the endpoint is probed
    return messages


def print_progress(event: dict[str, Any]) -> None:
    """One stderr line per round started or finished and per failed trajectory."""
    kind = event.get("type")
    if kind == "round_started":
        print(f"round {event['round']}: {event['k']} trajectories", file=sys.stderr)
    elif kind == "round_finished":
        extra = "".join(f", {event[k]} {k}" for k in ("failed", "stopped") if event.get(k))
        budget = (
            f"; budget {event['budget_exhausted']} ran out" if event.get("budget_exhausted") else ""
        )
        print(
            f"round {event['round']} done: {event['references']} references, "
            f"{event['completion_tokens']} tokens{extra}{budget}",
            file=sys.stderr,
        )
    elif kind == "trajectory_failed":
        print(f"round {event['round']} #{event['index']} failed: {event['error']}", file=sys.stderr)


_STATUS_LINES: dict[ThreadStatus, str] = {
    "new": "started",
    "interrupted": "resuming",
    "finished": "already answered",
}


async def run(args: argparse.Namespace) -> int:
    """Runs ``pacore solve``; prints the answer (or ``--json`` record) on stdout."""
    resolve_rounds(args.rounds)  # a bad vector fails before the endpoint is probed
    messages = _messages(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    config: RunnableConfig = {"max_concurrency": args.concurrency}
    async with open_run(args) as (model, saver):
        if saver is not None:
            thread_id = args.thread_id or default_thread_id(messages, args.rounds)
            args.saved_thread = thread_id  # for the interruption message
            config["configurable"] = {"thread_id": thread_id}

        def on_status(status: ThreadStatus) -> None:
            if saver is not None:
                print(f"thread {thread_id}: {_STATUS_LINES[status]}", file=sys.stderr)

        graph = create_pacore_graph(model, rounds=args.rounds).compile(checkpointer=saver)
        _, state = await arun_thread(
            graph,
            {"messages": messages},
            config,
            context=context_from_options(args),
            on_status=on_status,
            on_event=print_progress if progress else None,
        )
    if args.json:
        print(json.dumps(to_record(state), ensure_ascii=False, indent=2))
    else:
        print(state["messages"][-1].content)
    return 0
