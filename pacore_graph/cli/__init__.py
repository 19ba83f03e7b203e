"""``pacore``: run PaCoRe from a shell (``solve``), grade it on a benchmark (``eval``) or
serve it as an OpenAI-compatible endpoint (``serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from pacore_graph.cli import serve, solve
from pacore_graph.cli.options import (
    EXPECTED_ERRORS,
    Parser,
    apply_env_defaults,
    describe,
    exit_status,
    secrets_of,
)
from pacore_graph.eval import cli as eval_cli
from pacore_graph.secrets import RedactingFilter, redact


def _parser() -> Parser:
    parser = Parser(prog="pacore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    solve.add_parser(sub)
    eval_cli.add_parser(sub)
    serve.add_parser(sub)
    return parser


def _interrupted(args: object, signame: str) -> str:
    thread = getattr(args, "saved_thread", None)
    if getattr(args, "command", "") == "eval":
        resumable = bool(getattr(args, "redis_url", None))
        return f"interrupted ({signame})" + (
            "; rerun the same command to resume" if resumable else ""
        )
    if thread is None:
        return f"interrupted ({signame}); nothing was saved: add --redis-url to make runs resumable"
    return (
        f"interrupted ({signame}); finished trajectories are saved in thread {thread}: "
        "run the same command again to resume"
        + ("" if getattr(args, "thread_id", None) else f" (or pass --thread-id {thread})")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pacore`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for eval's manifest
    apply_env_defaults(args)
    if args.command == "serve":  # uvicorn owns the process: its loop, signals and logging
        return serve.main(args)
    command = solve.run if args.command == "solve" else eval_cli.run
    secrets = secrets_of(args)
    if args.log_level:
        handler = logging.StreamHandler()
        handler.addFilter(RedactingFilter(secrets))
        logging.basicConfig(level=args.log_level, handlers=[handler])

    async def run() -> int:
        # SIGTERM cancels the run like Ctrl-C does: calls in flight are cancelled, and what
        # finished is already in the checkpoint.
        task = asyncio.current_task()

        def terminate() -> None:
            args.signal = "SIGTERM"
            if task is not None:
                task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
        return await command(args)

    try:
        return asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        signame = getattr(args, "signal", "SIGINT")
        print(f"pacore: {_interrupted(args, signame)}", file=sys.stderr)
        return 143 if signame == "SIGTERM" else 130
    except Exception as exc:
        expected = isinstance(exc, EXPECTED_ERRORS)
        if expected:
            saved = bool(
                getattr(args, "saved_thread", None) or (args.command == "eval" and args.redis_url)
            )
            message = describe(exc, saved)
        else:  # a bug: one line, the traceback only in the debug log
            logging.getLogger("pacore").debug("unexpected error", exc_info=True)
            message = f"unexpected {type(exc).__name__}: {exc} (--log-level DEBUG shows where)"
        print(f"pacore: error: {redact(message, secrets)}".splitlines()[0], file=sys.stderr)
        return exit_status(exc) if expected else 1


__all__ = ["main"]
