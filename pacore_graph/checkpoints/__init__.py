"""LangGraph checkpoint savers on plain Redis (no RedisJSON/RediSearch modules needed), and
`FullInMemorySaver`, which gives LangGraph's in-memory saver the operations it lacks."""

from pacore_graph.checkpoints.memory import FullInMemorySaver
from pacore_graph.checkpoints.saver import (
    AsyncRedisSaver,
    RedisSaver,
    RedisUnavailableError,
    ThreadLease,
)

__all__ = [
    "AsyncRedisSaver",
    "FullInMemorySaver",
    "RedisSaver",
    "RedisUnavailableError",
    "ThreadLease",
]
