"""``pacore``: run PaCoRe from a shell."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import openai
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from langgraph.checkpoint.base import BaseCheckpointSaver

from pacore_graph.backends.select import backend_for_args
from pacore_graph.compaction import COMPACTIONS
from pacore_graph.context import context_from_options
from pacore_graph.errors import BudgetExhaustedError, PaCoReError, QuorumError
from pacore_graph.eval import cli as eval_cli
from pacore_graph.graph import create_pacore_graph
from pacore_graph.record import to_record
from pacore_graph.rounds import PRESETS, resolve_rounds
from pacore_graph.secrets import RedactingFilter, redact
from pacore_graph.template import last_user_index
from pacore_graph.threads import default_thread_id, run_input, thread_status

DEMO_PROBLEM = (
    "A farmer plants 17 rows of apple trees with 23 trees in each row. "
    "How many trees does the farmer plant? Put the final answer in \\boxed{}."
)

# Builds a graph only to read a thread's stored state; never called.
_NO_MODEL = FakeListChatModel(responses=["(unused)"])


class CLIError(Exception):
    """A problem to report in one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line, like every other pacore error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pacore: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pacore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    eval_cli.add_parser(sub)
    solve = sub.add_parser("solve", help="answer one problem with PaCoRe")
    solve.add_argument("problem", nargs="?", help="the problem (the last user message)")
    solve.add_argument("--demo", action="store_true", help="solve a built-in problem")
    solve.add_argument("--messages", type=Path, help='JSON file: [{"role": ..., "content": ...}]')
    solve.add_argument(
        "--rounds",
        default="low",
        help=f"exploration rounds: {'|'.join(PRESETS)} or N,N,... ([1] is appended; default low)",
    )
    solve.add_argument(
        "--base-url",
        action="append",
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1; repeat it to spread "
        "trajectories over replicas",
    )
    solve.add_argument(
        "--backend",
        choices=["openai", "embedded", "vllm"],
        help="openai: the --base-url endpoint(s) (default when given); embedded: a small model "
        "on the CPU, started by pacore (default otherwise); vllm: vLLM's engine in-process",
    )
    solve.add_argument(
        "--model",
        help="model name (default: the endpoint's first model); a path for --backend vllm "
        "or a GGUF file for --backend embedded",
    )
    solve.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY)")
    solve.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    solve.add_argument("--top-p", type=float, help="nucleus sampling (default 1.0)")
    solve.add_argument("--max-tokens", type=int, help="tokens per call (default: server's limit)")
    solve.add_argument("--seed", type=int, help="seed of the reference-order shuffle (default 42)")
    solve.add_argument("--compaction", choices=sorted(COMPACTIONS), help="compaction rule")
    solve.add_argument(
        "--empty-references",
        choices=["template", "problem"],
        help="when every trajectory failed: render the template (default) or send the problem",
    )
    solve.add_argument(
        "--drop-truncated",
        action="store_true",
        default=None,
        help="leave trajectories cut at max tokens out of the next round",
    )
    solve.add_argument("--context-limit", type=int, help="largest synthesis prompt, in tokens")
    solve.add_argument(
        "--min-success",
        type=_count_or_fraction,
        help="quorum of each round: a count, or a fraction of K such as 0.5 (the default); "
        "0 goes on whatever fails, as the reference did",
    )
    solve.add_argument(
        "--max-ttc-tokens",
        type=int,
        help="token budget of the run; when it runs out the final synthesis uses what finished",
    )
    solve.add_argument(
        "--max-seconds",
        type=float,
        help="time budget of the run, in seconds; when it runs out, as --max-ttc-tokens",
    )
    solve.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="model calls in flight at once (default 64, as the reference)",
    )
    solve.add_argument("--timeout", type=float, default=None, help="seconds per model call")
    solve.add_argument(
        "--redis-url",
        help="checkpoint the run in Redis (redis://HOST:PORT/DB); the same command resumes it",
    )
    solve.add_argument(
        "--thread-id",
        help="thread to checkpoint into (default: derived from the problem and rounds)",
    )
    solve.add_argument("--json", action="store_true", help="print the full record as JSON")
    solve.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log to stderr at this level (API keys are redacted)",
    )
    solve.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress lines on stderr (default: when stderr is a terminal)",
    )
    return parser


def _count_or_fraction(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)  # argparse reports a ValueError as "invalid value"


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


def _print_progress(event: dict[str, Any]) -> None:
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


@contextlib.asynccontextmanager
async def _checkpointer(args: argparse.Namespace) -> AsyncIterator[BaseCheckpointSaver | None]:
    if not args.redis_url:
        yield None
        return
    from pacore_graph.checkpoints import AsyncRedisSaver

    async with AsyncRedisSaver.from_conn_string(args.redis_url) as saver:
        yield saver


async def _run(args: argparse.Namespace, messages: list[BaseMessage]) -> dict[str, Any]:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    config: dict[str, Any] = {"max_concurrency": args.concurrency}
    async with _checkpointer(args) as saver:
        payload: dict[str, Any] | None = {"messages": messages}
        if saver is not None:
            thread_id = args.thread_id or default_thread_id(messages, args.rounds)
            args.saved_thread = thread_id  # for the interruption message
            config["configurable"] = {"thread_id": thread_id}
            # Reading the thread needs no backend: a finished run costs no model call.
            snapshot = (
                await create_pacore_graph(_NO_MODEL).compile(checkpointer=saver).aget_state(config)
            )
            status = thread_status(snapshot, messages)
            if status == "finished":
                print(f"thread {thread_id}: already answered", file=sys.stderr)
                return snapshot.values
            if status == "interrupted":
                print(f"thread {thread_id}: resuming", file=sys.stderr)
            else:
                print(f"thread {thread_id}: started", file=sys.stderr)
            payload = run_input(status, messages)
        with backend_for_args(args) as model:
            graph = create_pacore_graph(model, rounds=args.rounds).compile(checkpointer=saver)
            state: dict[str, Any] = {}
            async for mode, chunk in graph.astream(
                payload,
                config=config,
                context=context_from_options(args),
                stream_mode=["custom", "values"],
                # Each step's checkpoint is stored before its trajectories run, so a
                # SIGKILL can lose only calls in flight, never finished ones. (Without a
                # saver there is nothing to make durable.)
                durability="sync" if saver is not None else None,
            ):
                if mode == "values":
                    state = chunk
                elif progress:
                    _print_progress(chunk)
            return state


async def _solve(args: argparse.Namespace) -> int:
    resolve_rounds(args.rounds)  # a bad vector fails before the endpoint is probed
    state = await _run(args, _messages(args))
    if args.json:
        print(json.dumps(to_record(state), ensure_ascii=False, indent=2))
    else:
        print(state["messages"][-1].content)
    return 0


def _describe(exc: BaseException, saved: bool = False) -> str:
    if isinstance(exc, ConnectionError) and not isinstance(exc, PaCoReError):
        return f"{exc}; finished work is checkpointed: rerun the same command to resume"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the model endpoint: {exc.__cause__ or exc}"
    if isinstance(exc, openai.APIStatusError):
        return f"the model endpoint answered {exc.status_code}: {exc.message}"
    if isinstance(exc, QuorumError | BudgetExhaustedError) and saved:
        return f"{exc}; finished trajectories are checkpointed: rerun the same command to resume"
    return str(exc)


def _secrets(args: argparse.Namespace) -> list[str]:
    found = [args.api_key or "", os.environ.get("OPENAI_API_KEY", "")]
    if args.redis_url and (password := urlsplit(args.redis_url).password):
        found.append(password)
    return [s for s in found if s]


def _interrupted(args: argparse.Namespace, signame: str) -> str:
    thread = getattr(args, "saved_thread", None)
    if thread is None:
        return f"interrupted ({signame}); nothing was saved: add --redis-url to make runs resumable"
    return (
        f"interrupted ({signame}); finished trajectories are saved in thread {thread}: "
        "run the same command again to resume"
        + ("" if args.thread_id else f" (or pass --thread-id {thread})")
    )


async def _main(args: argparse.Namespace) -> int:
    # SIGTERM cancels the run like Ctrl-C does: calls in flight are cancelled, and what
    # finished is already in the checkpoint.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def terminate() -> None:
        args.signal = "SIGTERM"
        if task is not None:
            task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, terminate)
    return await _solve(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pacore`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "eval":
        return eval_cli.run(args)
    secrets = _secrets(args)
    if args.log_level:
        handler = logging.StreamHandler()
        handler.addFilter(RedactingFilter(secrets))
        logging.basicConfig(level=args.log_level, handlers=[handler])

    def fail(message: str, status: int) -> int:
        print(f"pacore: error: {redact(message, secrets)}".splitlines()[0], file=sys.stderr)
        return status

    try:
        return asyncio.run(_main(args))
    except (QuorumError, BudgetExhaustedError) as exc:  # the backend failed, not the input
        return fail(_describe(exc, saved=hasattr(args, "saved_thread")), 1)
    except (CLIError, PaCoReError, ImportError) as exc:
        return fail(_describe(exc), 2)
    except (openai.OpenAIError, ConnectionError, TypeError, ValueError) as exc:
        return fail(_describe(exc), 1)
    except (KeyboardInterrupt, asyncio.CancelledError):
        signame = getattr(args, "signal", "SIGINT")
        print(f"pacore: {_interrupted(args, signame)}", file=sys.stderr)
        return 143 if signame == "SIGTERM" else 130
    except Exception as exc:  # a bug: one line, the traceback only in the debug log
        logging.getLogger("pacore").debug("unexpected error", exc_info=True)
        return fail(f"unexpected {type(exc).__name__}: {exc} (--log-level DEBUG shows where)", 1)


if __name__ == "__main__":
    sys.exit(main())
