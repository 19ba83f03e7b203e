"""Real redis-server processes on free loopback ports, persistence off (a pytest plugin).

``redis_server`` / ``redis_url``: one plain server for the session, flushed per test.
``own_redis``: starts servers with extra options for one test.
``redis_cluster_url``: a one-node Redis Cluster (all 16384 slots on one server), started
on first use, so tests see the Cluster's cross-slot rules for real.
``redis_cluster3_url``: a three-master Redis Cluster (``redis+cluster://`` URL of one node),
so a client must follow MOVED redirections between servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from tests.servers import RedisNotInstalledError, RedisServer, free_port


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


def _cluster_node(directory: Path) -> RedisServer:
    return _start(
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


def _wait_cluster_ok(servers: Sequence[RedisServer], masters: int) -> None:
    """Waits until every node says the cluster is ok and knows ``masters`` masters."""
    clients = [redis.Redis(port=server.port) for server in servers]
    deadline = time.monotonic() + 20
    try:
        for client in clients:
            while True:
                info = client.execute_command("CLUSTER", "INFO")
                known = client.execute_command("CLUSTER", "NODES")
                if isinstance(known, dict):
                    known = "\n".join(known)
                text = known.decode() if isinstance(known, bytes) else str(known)
                if b"cluster_state:ok" in info and text.count("master") >= masters:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {masters}-master Redis Cluster did not come up")
                time.sleep(0.05)
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="session")
def redis_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A Redis Cluster of three masters on loopback, slots split evenly among them."""
    servers = [_cluster_node(tmp_path_factory.mktemp(f"redis-cluster3-{i}")) for i in range(3)]
    try:
        bounds = [(0, 5460), (5461, 10922), (10923, 16383)]
        for server, (low, high) in zip(servers, bounds, strict=True):
            client = redis.Redis(port=server.port)
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
            for other in servers:
                if other is not server:
                    bus = other.extra_args[other.extra_args.index("--cluster-port") + 1]
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port, bus)
            client.close()
        _wait_cluster_ok(servers, 3)
        yield servers
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def redis_cluster3_url(redis_cluster3: list[RedisServer]) -> str:
    """The three-master Cluster's URL (``redis+cluster://`` one node), emptied for each test."""
    for server in redis_cluster3:
        client = redis.Redis(port=server.port)
        client.flushall()
        client.close()
    return f"redis+cluster://127.0.0.1:{redis_cluster3[0].port}"


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A one-node Redis Cluster that owns every slot."""
    server = _cluster_node(tmp_path_factory.mktemp("redis-cluster"))
    client = redis.Redis(port=server.port)
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    client.close()
    _wait_cluster_ok([server], 1)
    yield server
    server.kill()


@pytest.fixture
def redis_cluster_url(redis_cluster_server: RedisServer) -> str:
    """The one-node Cluster's URL, emptied for each test."""
    client = redis.Redis(port=redis_cluster_server.port)
    client.flushall()
    client.close()
    return f"redis://127.0.0.1:{redis_cluster_server.port}"
