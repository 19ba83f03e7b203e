"""Local processes for tests and benchmarks (no pytest here, so benchmarks/ imports it too):
free loopback ports and private redis-servers."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class RedisNotInstalledError(RuntimeError):
    """No ``redis-server`` binary on PATH."""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process in ``directory``, to stop and start again on its port
    (persistence off but for ``stop(save=True)``). With ``--requirepass PW`` in
    ``extra_args``, `url` has no password."""

    def __init__(self, directory: Path, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisNotInstalledError(
                "redis-server is not installed: install it, e.g. "
                "`apt-get install redis-server` or `brew install redis`"
            )
        self.binary, self.directory, self.extra_args = binary, directory, list(extra_args)
        args = self.extra_args
        self.password = next((b for a, b in itertools.pairwise(args) if a == "--requirepass"), None)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Starts the server (again) on its port and waits until it answers PING."""
        options = f"--port {self.port} --bind 127.0.0.1 --appendonly no --dbfilename dump.rdb"
        argv = [self.binary, *options.split(), "--save", "", "--dir", str(self.directory)]
        self.proc = subprocess.Popen(
            [*argv, *self.extra_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = self._client(socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        with contextlib.closing(client):
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError as exc:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError(
                            f"redis-server did not start on port {self.port}"
                        ) from exc
                    time.sleep(0.05)

    def stop(self, save: bool = False) -> None:
        """Shuts the server down; ``save=True`` keeps its data for the next `start`."""
        if self.proc is None:
            return
        client = self._client()
        with contextlib.closing(client), contextlib.suppress(redis.ConnectionError):
            client.shutdown(save=save, nosave=not save)  # which closes the connection
        self.proc.wait(timeout=20)
        self.proc = None

    def _client(self, **kwargs: Any) -> redis.Redis:
        # No retries: redis-py's default retries a command whose connection closed with
        # seconds of backoff, and SHUTDOWN closes it by design (`start` polls on its own).
        return redis.Redis(
            port=self.port, password=self.password, retry=Retry(NoBackoff(), 0), **kwargs
        )

    def kill(self) -> None:
        """Kills the server at once (no save)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
