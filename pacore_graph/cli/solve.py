"""``pacore solve``: answer one problem with PaCoRe, resumable on a Redis thread. The answer
goes to stdout, the backend and progress to stderr.

    pacore solve --demo                # the embedded CPU model: no GPU, no API key
    pacore solve "What is 17 * 23?" --base-url http://127.0.0.1:8000/v1 --rounds medium
    pacore solve --messages chat.json --redis-url redis://127.0.0.1:6379/0 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any
from uuid import uuid4

import redis
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from pacore_graph.checkpoints.errors import ThreadLostError
from pacore_graph.cli.options import (
    CLIError,
    add_command,
    backend_line,
    open_run,
    secrets_of,
)
from pacore_graph.cli.progress import RetryWatcher, SolveProgress
from pacore_graph.context import DEFAULTS, context_from_options, merge_context
from pacore_graph.errors import DamagedThreadError, LeaseLostError
from pacore_graph.graph import create_pacore_graph
from pacore_graph.messages import last_user_index
from pacore_graph.nodes.review import review_in_editor
from pacore_graph.record import to_record
from pacore_graph.resume import BOUNDS
from pacore_graph.secrets import model_secrets
from pacore_graph.state import chat_messages
from pacore_graph.threads import ThreadStatus, arun_thread, default_thread_id, thread_lease
from pacore_graph.trajectories import is_finished, split_thinking
from pacore_graph.validation import check_input, check_settings

DEMO_PROBLEM = (
    "A farmer plants 17 rows of apple trees with 23 trees in each row. "
    "How many trees does the farmer plant? Put the final answer in \\boxed{}."
)

TICK_SECONDS = 0.5  # how often the live line is redrawn between events
PROBE_SECONDS = 5.0  # how long reading the thread back after a Redis failure may take
MAX_MESSAGES_BYTES = 32 * 2**20
"""The default ``--messages`` limit: room for a chat with images, not for a wrong file."""
MAX_MESSAGES_VARIABLE = "PACORE_MAX_MESSAGES_BYTES"

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def byte_size(text: str) -> int:
    """A size in bytes >= 1: ``33554432``, ``32M``, ``512K``, ``1G`` (powers of 1024, ``B``
    or ``iB`` allowed after); ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d{1,15})\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"not a size in bytes such as 32M: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def messages_limit(option: int | None) -> int:
    """The ``--messages`` size limit: the option, else ``$PACORE_MAX_MESSAGES_BYTES``, else
    `MAX_MESSAGES_BYTES`; CLIError when the variable is not a size."""
    text = os.environ.get(MAX_MESSAGES_VARIABLE, "").strip()
    if option is not None or not text:
        return MAX_MESSAGES_BYTES if option is None else option
    try:
        return byte_size(text)
    except ValueError as exc:
        raise CLIError(f"${MAX_MESSAGES_VARIABLE}: {exc}") from None


def add_parser(sub: Any) -> None:
    """Registers ``pacore solve`` on the ``pacore`` subcommands."""
    solve = add_command(sub, "solve", "answer one problem", __doc__ or "", rounds="")
    solve.add_argument(
        "problem", nargs="?", help="the problem (sent as the user message); or use --messages"
    )
    solve.add_argument("--demo", action="store_true", help="solve a built-in problem")
    solve.add_argument(
        "--messages",
        metavar="FILE",
        help='the chat as JSON, from FILE or - (stdin): [{"role": ..., "content": ...}, ...] '
        'or {"messages": [...]}; its last user message is the problem',
    )
    solve.add_argument(
        "--max-messages-bytes",
        type=byte_size,
        metavar="SIZE",
        help="largest --messages input, checked before it is read, e.g. 64M (default: "
        f"${MAX_MESSAGES_VARIABLE}, else 32M)",
    )
    solve.add_argument(
        "--thread-id",
        help="thread to checkpoint into (default: derived from the chat and the settings)",
    )
    solve.add_argument(
        "--restart",
        action="store_true",
        help="delete the thread's checkpoints first and run from scratch (a damaged thread, "
        "or a finished one to ask again); needs --redis-url",
    )
    solve.add_argument(
        "--wait",
        action="store_true",
        help="if another run is writing the thread, wait for it to end, then resume or "
        "print what it left (default: stop with an error)",
    )
    solve.add_argument("--json", action="store_true", help="print the full record as JSON")
    solve.add_argument(
        "--review",
        action="store_true",
        default=None,
        help="after each exploration round, edit the references the next round is sent in "
        "$EDITOR (keep, drop, reorder, rewrite, add; FINISH for the final synthesis now)",
    )


def _read_chat(source: str, limit: int) -> list[Any]:
    """The messages of ``--messages`` (a path, or - for stdin): a JSON list, or an object with
    a ``messages`` list; refused over ``limit`` bytes, a file that large before it is read."""
    where = "from stdin" if source == "-" else f"file {source}"
    above = (
        f"above the limit of {limit:,} bytes: raise it with --max-messages-bytes or "
        f"${MAX_MESSAGES_VARIABLE}"
    )
    try:
        if source == "-":
            stream = getattr(sys.stdin, "buffer", None)  # None: a text stream put in its place
            data = bytes(stream.read(limit + 1)) if stream else sys.stdin.read(limit + 1).encode()
        else:
            with open(source, "rb") as file:
                if (size := os.fstat(file.fileno()).st_size) > limit:
                    raise CLIError(f"messages {where} is {size:,} bytes, {above}")
                # Pipes and devices report no size: read one byte past the limit to see.
                data = file.read(limit + 1)
        if len(data) > limit:
            raise CLIError(f"messages {where} are larger, {above}")
        raw = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CLIError(f"cannot read messages {where}: {exc}") from None
    if isinstance(raw, dict) and "messages" in raw:
        raw = raw["messages"]
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(m, dict) and "role" in m and "content" in m for m in raw)
    ):
        raise CLIError(
            f'messages {where}: expected a JSON list of {{"role", "content"}} objects, '
            'or {"messages": [...]}'
        )
    return raw


def _messages(args: argparse.Namespace) -> list[BaseMessage]:
    sources = {"PROBLEM": args.problem, "--messages": args.messages, "--demo": args.demo or None}
    given = [name for name, value in sources.items() if value is not None]
    if len(given) > 1:
        raise CLIError(
            f"{' and '.join(given)} both give the problem: pass one "
            "(put a follow-up question in the --messages chat as its last user message)"
        )
    if args.messages is not None:
        raw = _read_chat(args.messages, messages_limit(args.max_messages_bytes))
    elif given:
        raw = [{"role": "user", "content": DEMO_PROBLEM if args.demo else args.problem}]
    else:
        raise CLIError("no problem given: pass PROBLEM or --messages FILE.json")
    messages: list[BaseMessage] = list(chat_messages(raw))  # as the graph reads them
    last_user_index(messages)  # no usable problem fails before the endpoint is probed
    return messages


async def _tick(progress: SolveProgress) -> None:
    while True:
        await asyncio.sleep(TICK_SECONDS)
        progress.draw()


def _unsaved(cause: str, answered: bool) -> CLIError:
    """The error of a run Redis failed to save (exit status 1), after its answer if printed."""
    error = CLIError(f"the answer above could not be saved: {cause}" if answered else cause)
    error.status = 1
    return error


async def _not_saved(
    exc: BaseException | None,
    saver: BaseCheckpointSaver,
    config: RunnableConfig,
    thread: str,
    answered: bool,
) -> CLIError | None:
    """The one line for Redis failing mid-run (``exc``): what failed, then what a rerun will
    find, read back rather than assumed. For a finished run (``exc`` None), that line if its
    thread does not read back whole, else None: a Redis that restarted without persistence
    mid-run accepts the later writes."""
    cause = (str(exc) or type(exc).__name__).splitlines()[0] if exc else ""
    if isinstance(exc, ThreadLostError):  # it says what is saved: nothing
        return _unsaved(cause, answered)
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            found = await saver.aget_tuple(config)
    except DamagedThreadError:
        saved = (
            f"thread {thread} lost part of its data (Redis restarted without persistence, "
            "or evicted keys): rerun with --restart to start over"
        )
    except (redis.exceptions.RedisError, OSError, TimeoutError):
        saved = (
            f"what finished before is in thread {thread} only if Redis keeps its data: "
            "rerun the same command to resume once Redis is back"
        )
    else:
        if found is not None and exc is None:
            return None
        saved = (
            f"finished work is saved in thread {thread}: rerun the same command to resume"
            if found is not None
            else f"nothing of this run is saved (Redis no longer holds thread {thread}: "
            "restarted without persistence?): a rerun starts over"
        )
    return _unsaved("; ".join(filter(None, [cause, saved])), answered)


async def run(args: argparse.Namespace) -> int:
    """Runs ``pacore solve``: the answer (or ``--json`` record) on stdout, even when Redis
    failed to save it (then the error says so, exit status 1), and progress on stderr."""
    context = context_from_options(args)
    # Bad settings and inputs fail before the endpoint is probed.
    settings = merge_context(DEFAULTS, context)
    final_round = len(check_settings(settings))
    messages = _messages(args)
    check_input(messages, settings)
    if args.restart and not args.redis_url:
        raise CLIError("--restart starts a checkpointed thread over: it needs --redis-url")
    progress = SolveProgress(sys.stderr, args.progress, secrets_of(args))
    config: RunnableConfig = {"max_concurrency": args.concurrency}
    answers: list[str] = []  # the final round's reply, kept as it arrives
    streamed: list[str] = []  # the answer's text as printed while it arrived
    state: dict[str, Any] | None = None
    failure: CLIError | None = None

    def keep_answer(update: Mapping[str, Any]) -> None:
        done = update.get("trajectory")
        for node_update in done if isinstance(done, list) else [done]:
            for traj in (node_update or {}).get("trajectories", []):
                if traj.get("round") == final_round and is_finished(traj):
                    answers.append(split_thinking(traj)[0])

    def show_answer(chunk: Any, metadata: dict[str, Any]) -> None:
        # Tokens of the answer go to stdout as they arrive; on a shared terminal the bar
        # gives way to them.
        if isinstance(chunk.content, str) and chunk.content:
            if not streamed and sys.stdout.isatty():
                progress.answering()
            streamed.append(chunk.content)
            sys.stdout.write(chunk.content)
            sys.stdout.flush()

    try:
        async with open_run(args) as (model, saver), contextlib.AsyncExitStack() as held:
            progress.secrets += model_secrets(model)
            progress.status(backend_line(args, model))
            if args.demo:
                progress.status(f"problem: {DEMO_PROBLEM}")
            # Bounds raised on the command line are the graph's too: it checks its defaults.
            guards = {k: v for k, v in context.items() if k in BOUNDS}
            graph = create_pacore_graph(model, rounds=args.rounds, **guards).compile(
                checkpointer=saver if saver is not None or not args.review else InMemorySaver()
            )
            if saver is None and args.review:  # a pause needs a checkpointer
                config["configurable"] = {"thread_id": "review"}
            saved: Mapping[str, Any] | None = None  # an interrupted thread's state
            thread_id = ""
            if saver is not None:
                # A raised bound is not another run: the same command resumes it.
                identity = {k: v for k, v in context.items() if k not in BOUNDS}
                thread_id = args.thread_id or default_thread_id(messages, identity)
                args.saved_thread = thread_id  # for the interruption message
                config["configurable"] = {"thread_id": thread_id}
                # One writer per thread: held (or waited for) before the thread is read.
                config = await held.enter_async_context(
                    thread_lease(
                        graph,
                        config,
                        wait=args.wait,
                        on_wait=lambda holder: progress.status(
                            f"thread {thread_id}: busy ({holder} is writing it), waiting"
                        ),
                    )
                )
                if args.restart:
                    await saver.adelete_thread(thread_id)
                    progress.status(f"thread {thread_id}: deleted (--restart)")
                snapshot = await graph.aget_state(config)
                saved = snapshot.values if snapshot.next or snapshot.tasks else None

            def on_status(status: ThreadStatus) -> None:
                if status == "interrupted" and saved is not None:
                    progress.resume(thread_id, saved)
                else:
                    line = {"new": "started", "interrupted": "resuming"}.get(status)
                    progress.status(f"thread {thread_id}: {line or 'already answered'}")

            if progress.mode != "off":
                progress.calls = RetryWatcher(progress.retry)
                config["callbacks"] = [progress.calls]
            ticker = asyncio.ensure_future(_tick(progress))  # draws only in bar mode
            try:
                command: Command | None = None
                while True:
                    status, state = await arun_thread(
                        graph,
                        {"messages": messages},
                        config,
                        command=command,
                        context=context,
                        on_status=on_status if saver is not None else None,
                        on_event=progress.event if progress.mode != "off" else None,
                        on_update=keep_answer if saver is not None else None,
                        on_message=None if args.json else show_answer,
                    )
                    paused = args.review and (await graph.aget_state(config)).interrupts
                    if not paused:
                        break
                    progress.status(f"round {paused[0].value['round']}: review in $EDITOR")
                    command = Command(resume=review_in_editor(paused[0].value))
                if saver is not None and status != "finished":
                    failure = await _not_saved(None, saver, config, thread_id, True)
            # The saver's errors are redis-py's too. A lost lease is a save failure as well:
            # a run that stalled past it, or a Redis that lost its data (the lease with it).
            except (redis.exceptions.RedisError, LeaseLostError) as exc:
                if saver is None:
                    raise
                failure = await _not_saved(exc, saver, config, thread_id, bool(answers))
            finally:
                ticker.cancel()
    except ThreadLostError as exc:  # the lease's renewal found Redis lost the thread
        failure = _unsaved(str(exc).splitlines()[0], bool(answers))
    finally:
        progress.close()
    if state or answers:  # without a state (Redis failed), the final round's answer
        if not args.json:
            text = str(state["messages"][-1].content) if state else answers[-1]
        else:  # the record's request_id is the thread's: a rerun prints it again
            request_id = getattr(args, "saved_thread", None) or str(uuid4())
            record = to_record(state, request_id) if state else {"answer": answers[-1]}
            text = json.dumps(record, ensure_ascii=False, indent=2)
        # What streamed ends its line; an answer that differs from it (a retried call
        # streamed twice) is printed whole on the next.
        print("" if "".join(streamed) == text else f"\n{text}" if streamed else text)
    elif streamed:
        print()
    if args.demo:  # a 135M model is often wrong: say so, lest the tool be blamed
        print(f"the right answer is {17 * 23}; a small model often misses it", file=sys.stderr)
    if failure is not None:
        raise failure
    return 0
