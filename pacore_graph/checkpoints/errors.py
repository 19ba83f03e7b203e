"""What the Redis savers raise when Redis refuses them: each error names the server (never
its password) and what to do. Each is also the builtin error a caller would expect, so
``except OSError`` (a store that fails) or ``except ValueError`` (a setting to fix) works
without importing redis."""

from __future__ import annotations

import builtins

import redis


class RedisAuthenticationError(redis.exceptions.AuthenticationError, builtins.PermissionError):
    """Redis refused the URL's password or user, or needs a password the URL lacks."""


class RedisOutOfMemoryError(redis.exceptions.OutOfMemoryError, builtins.OSError):
    """Redis is at ``maxmemory`` and its policy evicts nothing of ours: a write was refused
    (like a full disk). Nothing already stored is lost."""


class RedisEvictionPolicyError(redis.exceptions.RedisError, builtins.ValueError):
    """Redis's ``maxmemory-policy`` may evict the saver's keys, which would damage threads:
    refused at ``setup`` unless ``allow_eviction=True``."""


__all__ = ["RedisAuthenticationError", "RedisEvictionPolicyError", "RedisOutOfMemoryError"]
