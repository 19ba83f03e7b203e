"""LangGraph checkpoint savers on plain Redis (no RedisJSON/RediSearch modules needed)."""

from pacore_graph.checkpoints.saver import AsyncRedisSaver, RedisSaver, RedisUnavailableError

__all__ = ["AsyncRedisSaver", "RedisSaver", "RedisUnavailableError"]
