"""Real redis-server processes on free loopback ports, persistence off (a pytest plugin).

``redis_server`` / ``redis_url``: one plain server for the session, flushed per test.
``own_redis``: starts servers with extra options for one test.
``redis_cluster_url``: a one-node Redis Cluster (all 16384 slots on one server), started
on first use, so tests see the Cluster's cross-slot rules for real.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from pacore_graph.testing import RedisNotInstalledError, RedisServer, free_port


def _start(directory: Path, extra_args: Sequence[str] = ()) -> RedisServer:
    try:
        server = RedisServer(directory, extra_args)
    except RedisNotInstalledError as exc:
        pytest.fail(f"{exc} (the Redis tests need a real server)", pytrace=False)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's Redis server (``.url``, ``.port``, ``.stop()``, ``.start()``)."""
    server = _start(tmp_path_factory.mktemp("redis"))
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


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Starts redis-servers with extra options (each its own directory); kills them after."""
    servers: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", extra)
        server.directory.mkdir()
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A one-node Redis Cluster that owns every slot."""
    directory = tmp_path_factory.mktemp("redis-cluster")
    server = _start(
        directory,
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / "nodes.conf"),
            # The default bus port (port + 10000) overflows for high ephemeral ports.
            "--cluster-port",
            str(free_port()),
        ],
    )
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
