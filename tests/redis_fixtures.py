"""Real redis-server processes on free loopback ports, persistence off (a pytest plugin).

``redis_server`` / ``redis_url``: one plain server for the session, flushed per test.
``redis_cluster_url``: a one-node Redis Cluster (all 16384 slots on one server), started
on first use, so tests see the Cluster's cross-slot rules for real.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process that can be stopped and started again on the same port.

    ``stop(save=True)`` writes an RDB snapshot first, so a restart comes back with the
    data, like a managed Redis that restarts; persistence is otherwise off.

    Args:
        directory: The server's own working directory (RDB file, cluster config).
        extra_args: More ``redis-server`` options.
    """

    def __init__(self, directory: Path, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed (the Redis tests need a real server): "
                "install it, e.g. `apt-get install redis-server` or `brew install redis`",
                pytrace=False,
            )
        self.binary = binary
        self.directory = directory
        self.extra_args = list(extra_args)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Starts the server (again) on its port and waits until it answers PING."""
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--dbfilename",
                "dump.rdb",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        try:
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
        finally:
            client.close()

    def stop(self, save: bool = False) -> None:
        """Shuts the server down; ``save=True`` keeps its data for the next `start`."""
        if self.proc is None:
            return
        client = redis.Redis(port=self.port)
        try:
            client.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            pass  # shutdown closes the connection under us
        finally:
            client.close()
        self.proc.wait(timeout=20)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's Redis server (``.url``, ``.port``, ``.stop()``, ``.start()``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The server's URL, with an empty database for each test."""
    if redis_server.proc is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A one-node Redis Cluster that owns every slot."""
    directory = tmp_path_factory.mktemp("redis-cluster")
    server = RedisServer(
        directory,
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            # The default bus port (port + 10000) overflows for high ephemeral ports.
            "--cluster-port",
            str(_free_port()),
        ],
    )
    server.start()
    client = redis.Redis(port=server.port)
    try:
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 20
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
    finally:
        client.close()
    yield server
    server.kill()


@pytest.fixture
def redis_cluster_url(redis_cluster_server: RedisServer) -> str:
    """The one-node Cluster's URL, emptied for each test."""
    client = redis.Redis(port=redis_cluster_server.port)
    client.flushall()
    client.close()
    return f"redis://127.0.0.1:{redis_cluster_server.port}"
