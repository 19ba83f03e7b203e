"""LangGraph checkpoint savers on plain Redis (no RedisJSON/RediSearch modules needed), and
`FullInMemorySaver`, which gives LangGraph's in-memory saver the operations it lacks."""

from pacore_graph.checkpoints.errors import (
    RedisAuthenticationError,
    RedisEvictionPolicyError,
    RedisOutOfMemoryError,
    RedisPermissionError,
    RedisUnavailableError,
    ThreadLostError,
)
from pacore_graph.checkpoints.lease import ThreadLease
from pacore_graph.checkpoints.memory import FullInMemorySaver
from pacore_graph.checkpoints.saver import AsyncRedisSaver, RedisSaver, aconnect, connect
from pacore_graph.errors import DamagedThreadError

__all__ = [
    "AsyncRedisSaver",
    "DamagedThreadError",
    "FullInMemorySaver",
    "RedisAuthenticationError",
    "RedisEvictionPolicyError",
    "RedisOutOfMemoryError",
    "RedisPermissionError",
    "RedisSaver",
    "RedisUnavailableError",
    "ThreadLease",
    "ThreadLostError",
    "aconnect",
    "connect",
]
