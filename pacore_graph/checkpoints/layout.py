"""Key layout of the Redis checkpoint savers: key names, hash fields, value encoding.

Every key of a thread carries the hash tag ``{thread_id}``, so a thread lives in one
Redis Cluster slot and one MULTI/EXEC can write any part of it. A thread has the same
six keys whatever its namespaces and history, so no operation has to look keys up:

    P:{t}:ids     sorted set, score 0, of ns NUL checkpoint_id NUL parent_id;
                  ids are uuid6, so lex order within a namespace is time order
    P:{t}:cp      hash ns NUL checkpoint_id -> checkpoint without channel values
    P:{t}:meta    hash ns NUL checkpoint_id -> metadata
    P:{t}:blobs   hash ns NUL channel NUL version -> value ("" when the channel is empty)
    P:{t}:writes  hash ns NUL checkpoint_id NUL task_id NUL idx -> task_path NUL channel NUL value
    P:{t}:wix     sorted set, score 0, of the writes' fields (one checkpoint = one lex range)
    P:threads     sorted set thread_id -> expiry (unix time, +inf without TTL); list(None) only
    P:{t}:lease   string: the token of the run writing the thread, with its own short TTL;
                  not one of the six (writes neither refresh, copy nor delete it)

Channel values are stored once per (channel, version), as the Postgres saver does, so a
checkpoint re-serializes only the channels that changed.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

NUL = "\x00"
LEASE = "lease"
LEASE_CONFIG_KEY = "__pacore_lease"
"""The ``configurable`` key carrying a run's lease token to `put` and `put_writes`."""
THREAD_KEYS = ("ids", "cp", "meta", "blobs", "writes", "wix")
HASHES = ("cp", "meta", "blobs", "writes")
SORTED_SETS = ("ids", "wix")


class Layout:
    """Names and encodings shared by every saver operation: ``serde`` encodes checkpoints,
    metadata, values and writes; ``key_prefix`` and ``ttl`` as `RedisSaver` takes them.

    Raises:
        ValueError: If the prefix holds a brace (it would move the hash tag) or ttl <= 0.
    """

    def __init__(self, serde: SerializerProtocol, key_prefix: str, ttl: float | None) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix {key_prefix!r} must not contain braces")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive seconds or None, not {ttl!r}")
        self.serde = serde
        self.prefix = key_prefix
        self.ttl = ttl
        self.ttl_ms = None if ttl is None else max(1, round(ttl * 1000))
        self.threads_key = f"{key_prefix}:threads"  # the registry, in its own slot

    def key(self, thread_id: str, name: str) -> str:
        """One of the thread's keys; ``{thread_id}`` pins the thread to one Cluster slot."""
        return f"{self.prefix}:{{{thread_id}}}:{name}"

    def keys(self, thread_id: str) -> list[str]:
        """Every key the thread can have."""
        return [self.key(thread_id, name) for name in THREAD_KEYS]

    @staticmethod
    def field(*parts: str) -> str:
        """A hash field or sorted-set member made of NUL-separated parts."""
        return NUL.join(parts)

    @staticmethod
    def split(raw: bytes) -> list[str]:
        """The parts of a field or member."""
        return raw.decode().split(NUL)

    @classmethod
    def lex_range(cls, *parts: str) -> tuple[str, str]:
        """ZRANGEBYLEX bounds of the members that start with ``parts`` followed by NUL."""
        head = cls.field(*parts)
        return f"[{head}{NUL}", f"({head}\x01"

    def dump(self, obj: Any) -> bytes:
        """The serde's type tag, NUL, then the serialized data."""
        kind, data = self.serde.dumps_typed(obj)
        return kind.encode() + b"\x00" + data

    def load(self, raw: bytes) -> Any:
        """The inverse of `dump`."""
        kind, _, data = raw.partition(b"\x00")
        return self.serde.loads_typed((kind.decode(), data))
