"""Shared fixtures: a scripted OpenAI-compatible server and a real Redis server on loopback."""

import asyncio
import contextlib
import io
import logging
import os
import pty
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

import pytest

from pacore_graph import ChatOpenAICompatible
from pacore_graph.checkpoints import connect
from pacore_graph.cli import main
from pacore_graph.testing import Reply, Responder, ScriptedServer, last_user_text

pytest_plugins = ["tests.redis_fixtures"]

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the vLLM venv of `make test-vllm` runs without it
    pass
else:
    # Sized for CI (tests/test_properties.py): about a second per property test, the same
    # examples on every run (a failure reproduces); HYPOTHESIS_PROFILE=thorough explores more.
    _HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
    settings.register_profile(
        "ci", max_examples=50, deadline=None, derandomize=True, suppress_health_check=_HEALTH
    )
    settings.register_profile(
        "thorough", max_examples=1000, deadline=None, suppress_health_check=_HEALTH
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    """Starts scripted servers on free loopback ports; all are stopped after the test."""
    servers: list[ScriptedServer] = []

    def start(responder: Responder | None = None, **kwargs) -> ScriptedServer:
        server = ScriptedServer(responder, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def model_for(server: ScriptedServer, **kwargs) -> ChatOpenAICompatible:
    """A pooled OpenAI-compatible model pointed at a scripted server."""
    return ChatOpenAICompatible(
        base_url=server.base_url, model=server.model, **{"api_key": "test-key", **kwargs}
    )


def pacore_argv(*args: str) -> list[str]:
    """The ``pacore`` command with ``args``, as a subprocess argv (this interpreter's)."""
    return [sys.executable, "-m", "pacore_graph.cli", *args]


class Ran:
    """What a ``pacore`` command run in-process printed, and its exit status."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def pacore_in_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    stdout: io.StringIO | None = None,
    stderr: TextIO | None = None,
) -> Ran:
    """``pacore ARGS`` run by `main` in this process, with ``env`` as the whole environment
    and ``input`` on stdin: for runs that need no process of their own (a subprocess spends
    seconds importing); signals, kills and stalls keep theirs.

    As in a process of its own, warnings (Python's default filters) and log records (no
    handler but what ``--log-level`` installs) go to its stderr, not to pytest's capture.
    ``stdout``, when given, is what it prints to (a test watching the output as it grows);
    ``stderr``, when given, is where its stderr goes instead (`pacore_on_a_terminal`), and
    the `Ran`'s is empty.
    """
    out, err = stdout or io.StringIO(), io.StringIO()
    environ, stdin = dict(os.environ), sys.stdin
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    sys.stdin = io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")
    root.handlers.clear()
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(stderr or err),
            warnings.catch_warnings(),
        ):
            warnings.resetwarnings()
            for action, category in _DEFAULT_WARNING_FILTERS:
                warnings.simplefilter(action, category)
            warnings.showwarning = _print_warning
            try:
                status = main(list(args))
            except SystemExit as exc:  # argparse: --help, a bad argument
                status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.stdin = stdin
        os.environ.clear()
        os.environ.update(environ)
    return Ran(status, out.getvalue(), err.getvalue())


_DEFAULT_WARNING_FILTERS = [
    ("ignore", category)
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
]
"""Python's default warning filters without ``-W`` (less the one for ``__main__``)."""


def pacore_on_a_terminal(
    *args: str, env: Mapping[str, str] | None = None, shown: Callable[[bytes], None] | None = None
) -> tuple[Ran, str]:
    """``pacore ARGS`` run by `pacore_in_process` with its stderr on a pseudo-terminal: what it
    ran, and the terminal's text (whose line discipline ends each line with ``\\r\\n``).
    ``shown``, when given, is called with the text so far as each piece arrives (from a
    reader thread)."""
    master, slave = pty.openpty()
    text = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO: the terminal was closed
            while chunk := os.read(master, 65536):
                text.extend(chunk)
                if shown is not None:
                    shown(bytes(text))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with open(slave, "w", encoding="utf-8") as terminal:
            ran = pacore_in_process(*args, env=env, stderr=terminal)
        reader.join(timeout=30)
    finally:
        os.close(master)
    return ran, text.decode()


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning on stderr, as Python prints it without pytest."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_in_process(argv: list[str], **kwargs: Any) -> Ran:
    """A `pacore_argv` (or `solve_command`) run by `pacore_in_process`."""
    prefix = pacore_argv()
    assert argv[: len(prefix)] == prefix, argv
    return pacore_in_process(*argv[len(prefix) :], **kwargs)


def solve_command(server: ScriptedServer, problem: str, *extra: str) -> list[str]:
    """``pacore solve`` as a subprocess argv, pointed at ``server``."""
    return pacore_argv("solve", problem, "--base-url", server.base_url, *extra)


@contextlib.contextmanager
def on_one_core() -> Iterator[None]:
    """Runs the block, and every process it starts, on one core of this thread's.

    The embedded model's default is a llama.cpp thread per core: beside busy neighbours
    (the other test workers) two threads spin at their barriers, and three short calls
    take seconds of CPU where one thread takes a fraction (tests/test_embedded.py's
    server uses one thread for the same reason). Not on Linux: the block as it is.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)  # this thread's; children inherit it
    os.sched_setaffinity(0, {sorted(cores)[os.getpid() % len(cores)]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM to a server's process group (a graceful shutdown), SIGKILL if it is still
    running ``grace`` seconds later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


class Gate:
    """A responder that holds every reply until `open_when`'s condition holds, then answers
    with ``reply``: calls pile up as far as the client lets them, with no timing involved."""

    def __init__(self, reply: Callable[[dict[str, Any]], Any]) -> None:
        self.reply = reply
        self.opened = threading.Event()

    def __call__(self, body: dict[str, Any]) -> Any:
        self.opened.wait(30)
        return self.reply(body)

    def open_when(self, predicate: Callable[[], bool]) -> None:
        """Opens the gate (from a watcher thread) once ``predicate`` holds."""

        def watch() -> None:
            wait_for(predicate)
            self.opened.set()

        threading.Thread(target=watch, daemon=True).start()


class FinalFailsOnce:
    """Answers round 1; the first final call fails for good (HTTP 400), the next ones answer."""

    def __init__(self) -> None:
        self.final_calls = 0

    def __call__(self, body: dict[str, Any]) -> Reply:
        if "Reference 1:" in last_user_text(body):
            self.final_calls += 1
            if self.final_calls == 1:
                return Reply(status=400, error="bad request")
            return Reply(content="<think>agree</think>\\boxed{391}")
        return Reply(content="candidate: 391")


TOO_LATE = Reply(content="too late", status=503)
"""What a held call answers once released where its run has moved on (retried)."""


class Held:
    """A responder that answers the first ``answer_first`` exploration calls, fails the next
    ``fail`` for good (HTTP 400, not retried) and holds the others until `release` is set; the
    synthesis (its prompt lists references) is answered at once, or with ``hold_final``
    held instead while every exploration call is answered.

    `held` is set when a call is held. A held call answers ``late`` once released (default:
    its candidate), or, given ``held_reply``, is answered at once with that (a delayed reply
    the client can hang up on). Once `holding` is set to False, new calls are not held.
    """

    def __init__(
        self,
        answer_first: int = 0,
        *,
        fail: int = 0,
        hold_final: bool = False,
        answer: str = "391",
        final: Responder | None = None,
        late: Reply | None = None,
        held_reply: Reply | None = None,
        release: threading.Event | None = None,
    ) -> None:
        self.answer_first, self.fail, self.hold_final = answer_first, fail, hold_final
        self.answer, self.final, self.late, self.held_reply = answer, final, late, held_reply
        self.release = release or threading.Event()
        self.held = threading.Event()
        self.holding = True
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply | str:
        if "Reference 1:" in last_user_text(body):
            if self.hold_final and self.holding:
                self.held.set()
                self.release.wait(60)
            if self.final is not None:
                return self.final(body)
            return Reply(content=f"<think>agree</think>\\boxed{{{self.answer}}}")
        with self.lock:
            n, self.calls = self.calls, self.calls + 1
        if self.answer_first <= n < self.answer_first + self.fail:
            return Reply(status=400, error="scripted refusal")
        if n >= self.answer_first + self.fail and self.holding and not self.hold_final:
            self.held.set()
            if self.held_reply is not None:
                return self.held_reply
            self.release.wait(60)
            if self.late is not None:
                return self.late
        return Reply(content=f"candidate {n}: {self.answer}")


def saved_trajectories(redis_url: str, thread_id: str, prefix: str = "pacore") -> int:
    """How many trajectory results of ``thread_id`` are in Redis (task writes), for tests
    that must kill a run only once its finished calls are saved."""
    client = connect(redis_url)  # a Cluster URL too
    try:
        values = client.hvals(f"{prefix}:{{{thread_id}}}:writes")
    finally:
        client.close()
    # A trajectory task is a Send ("__pregel_push" path); prepare's reset writes the channel too.
    return sum(v.startswith(b"~__pregel_push") and b"\x00trajectories\x00" in v for v in values)


def final_state_while_streaming(graph: Any, input: dict[str, Any]) -> dict[str, Any]:
    """Runs ``graph`` (async) with token streaming on, as a chat UI would; its final state."""

    async def run() -> dict[str, Any]:
        state: dict[str, Any] = {}
        async for mode, chunk in graph.astream(input, stream_mode=["messages", "values"]):
            if mode == "values":
                state = chunk
        return state

    return asyncio.run(run())
