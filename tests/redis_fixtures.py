"""A real redis-server on a free loopback port, persistence off, for the whole test session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
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
    """

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: apt-get install redis-server (make test does)"
            )
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from exc
                time.sleep(0.05)
        client.close()

    def stop(self, save: bool = False) -> None:
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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's Redis server."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    if server.proc is not None:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The server's URL, with an empty database for each test."""
    if redis_server.proc is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
