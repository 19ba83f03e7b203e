"""What the Redis savers raise when Redis refuses them or loses a thread; each names the
server (never its password) and what to do, and is also the builtin error a caller expects:
``except OSError`` (a failing store) or ``ValueError`` (a setting to fix) needs no redis."""

from __future__ import annotations

import builtins

import redis


class RedisUnavailableError(redis.exceptions.ConnectionError, builtins.ConnectionError):
    """Redis cannot be reached."""


class RedisAuthenticationError(redis.exceptions.AuthenticationError, builtins.PermissionError):
    """Redis refused the URL's password or user, or needs a password the URL lacks."""


class RedisPermissionError(redis.exceptions.NoPermissionError, builtins.PermissionError):
    """Redis's ACL refuses a command the saver needs to the URL's user."""


class RedisOutOfMemoryError(redis.exceptions.OutOfMemoryError, builtins.OSError):
    """Redis is at ``maxmemory`` and its policy evicts none of the saver's keys: a write was
    refused (like a full disk). Nothing already stored is lost."""


class RedisEvictionPolicyError(redis.exceptions.RedisError, builtins.ValueError):
    """Redis's ``maxmemory-policy`` may evict the saver's keys, which would damage threads:
    refused at ``setup`` unless ``allow_eviction=True``."""


class ThreadLostError(redis.exceptions.RedisError, builtins.OSError):
    """Redis lost the thread a run was writing, with its lease (it restarted without persistence,
    or was flushed): nothing of the run is saved, and a rerun starts the thread over."""

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        super().__init__(
            f"Redis lost thread {thread_id} while this run wrote it (it restarted without "
            "persistence, or was flushed): nothing of this run is saved; a rerun starts over"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.thread_id,))
