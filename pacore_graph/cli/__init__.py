"""``pacore``: run PaCoRe from a shell (``solve``), grade it on a benchmark (``eval``),
serve it as an OpenAI-compatible endpoint (``serve``) or as an MCP tool (``mcp``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, NoReturn

from pacore_graph.cli import curate, mcp, serve, solve
from pacore_graph.cli import eval as eval_cli
from pacore_graph.cli.options import Parser, apply_env_defaults, log_to_stderr, report, secrets_of
from pacore_graph.collector import tune_collector


def _parser() -> Parser:
    parser = Parser(prog="pacore", description=__doc__.replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in (solve, eval_cli, curate, serve, mcp):
        command.add_parser(sub)
    return parser


GRACE_SECONDS = 0.5
"""How long an interrupted command may take to close before it exits anyway."""


class Interruption:
    """SIGINT and SIGTERM, acted on within a second even while the event loop is busy: the
    handler asks the loop to cancel the run and wakes a watchdog thread that ends the process
    after `GRACE_SECONDS`; a second signal ends it at once."""

    def __init__(self, args: object) -> None:
        self.args = args
        self.signame: str | None = None  # the first signal received, e.g. "SIGTERM"
        self.task: asyncio.Task[Any] | None = None  # the running command, to cancel
        self._lock = threading.RLock()  # re-entrant: a second signal may come inside `report`
        self._reported = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interruption]:
        """Handles both signals while the block runs (in the main thread; a no-op elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        # The handler wakes the watchdog with a byte on a pipe: a write takes no lock the
        # interrupted code may hold (starting a thread or setting an Event would).
        self._wake_r, self._wake_w = os.pipe()
        watchdog = threading.Thread(target=self._watch, name="pacore-interruption", daemon=True)
        watchdog.start()
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.signame is None:  # no signal: let the watchdog go
                os.write(self._wake_w, b"x")
                watchdog.join()
                os.close(self._wake_r)
                os.close(self._wake_w)

    def report(self) -> int:
        """Prints the interruption line (once, whoever comes first); the exit status."""
        signame = self.signame or "SIGINT"
        with self._lock:
            if not self._reported:
                self._reported = True
                line = f"pacore: {self._line(signame)}"
                try:
                    print(line, file=sys.stderr, flush=True)
                except Exception:  # stderr busy in the interrupted frame: write around it
                    os.write(2, (line + "\n").encode())
        return 143 if signame == "SIGTERM" else 130

    def _line(self, signame: str) -> str:
        args, interrupted = self.args, f"interrupted ({signame})"
        thread = getattr(args, "saved_thread", None)
        if getattr(args, "command", "") in ("eval", "curate"):
            resumable = getattr(args, "redis_url", None)
            return interrupted + ("; rerun the same command to resume" if resumable else "")
        if thread is None:
            return f"{interrupted}; nothing was saved: add --redis-url to make runs resumable"
        return (
            f"{interrupted}; finished trajectories are saved in thread {thread}: "
            "run the same command again to resume"
            + ("" if getattr(args, "thread_id", None) else f" (or pass --thread-id {thread})")
        )

    def exit_now(self) -> NoReturn:
        """Reports the interruption and ends the process, skipping the interpreter's teardown."""
        status = self.report()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)

    def _watch(self) -> None:
        os.read(self._wake_r, 1)
        if self.signame is None:
            return
        time.sleep(GRACE_SECONDS)
        self.exit_now()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signame is not None:
            self.exit_now()
        self.signame = signal.Signals(signum).name
        os.write(self._wake_w, b"x")
        task = self.task
        if task is None:
            raise KeyboardInterrupt  # the command has not started: stop where it is
        with contextlib.suppress(RuntimeError):  # the loop has closed: the watchdog ends it
            task.get_loop().call_soon_threadsafe(task.cancel)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pacore`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for eval's manifest
    apply_env_defaults(args)
    secrets = secrets_of(args)
    if args.command in ("serve", "mcp"):  # uvicorn or the MCP SDK owns the loop and signals
        try:
            return (serve if args.command == "serve" else mcp).main(args, secrets)
        except Exception as exc:
            return report(exc, secrets)
    command = {"solve": solve.run, "eval": eval_cli.run, "curate": curate.run}[args.command]
    if args.log_level:
        log_to_stderr(args.log_level, secrets)

    # A round cancelled before all its trajectories started leaves the waiting ones'
    # coroutines unawaited behind LangGraph's concurrency gate: expected, not a bug to show.
    warnings.filterwarnings(
        "ignore", "coroutine 'arun_with_retry' was never awaited", RuntimeWarning
    )
    interruption = Interruption(args)
    tune_collector()

    async def run() -> int:
        interruption.task = asyncio.current_task()
        return await command(args)

    try:
        with interruption.installed():
            return asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        if interruption.signame is not None:  # the run is closed: nothing left to tear down
            interruption.exit_now()
        return interruption.report()
    except Exception as exc:
        saved = getattr(args, "saved_thread", None) or (args.command != "solve" and args.redis_url)
        return report(exc, secrets, bool(saved))


__all__ = ["main"]
