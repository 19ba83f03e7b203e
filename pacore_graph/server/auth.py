"""Incoming API keys, ``Authorization: Bearer <key>``, kept as SHA-256 digests and each
compared with no early exit, so neither timing nor a memory dump shows a key. A durable
run's thread id holds a digest of the caller's key: no caller reaches another's run."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path

KEYS_ENV = "PACORE_SERVE_API_KEYS"
"""Keys accepted when no ``--api-keys-file`` is given: separated by commas or whitespace."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class AuthError(Exception):
    """A request without a key, or with a key that is not configured."""


@dataclass(frozen=True)
class ApiKeys:
    """The configured keys, as digests; empty accepts every request."""

    digests: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """Keys separated by newlines, commas or spaces; ``#`` starts a comment line."""
        lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
        keys = " ".join(lines).replace(",", " ").split()
        return cls(tuple(_digest(k) for k in dict.fromkeys(keys)))

    @classmethod
    def from_file(cls, path: str | Path) -> ApiKeys:
        """The keys of a file (`parse`'s format).

        Raises:
            ValueError: The file holds no key (a server meant to be closed would be open).
            OSError: It cannot be read.
        """
        keys = cls.parse(Path(path).read_text(encoding="utf-8"))
        if not keys:
            raise ValueError(f"the API keys file {path} holds no key")
        return keys

    def __bool__(self) -> bool:
        return bool(self.digests)

    def check(self, authorization: str | None) -> str:
        """The caller's namespace for an ``Authorization`` header value: a digest prefix of
        its key (``""`` when authentication is off).

        Raises:
            AuthError: Keys are configured and the header names none of them.
        """
        if not self.digests:
            return ""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthError(
                "missing API key: send it as 'Authorization: Bearer <key>' "
                "(the OpenAI SDK's api_key)"
            )
        given = _digest(key)
        # Every digest, whichever matches: constant time.
        if not any([hmac.compare_digest(given, digest) for digest in self.digests]):
            raise AuthError("incorrect API key provided")
        return given.hex()[:16]


__all__ = ["KEYS_ENV", "ApiKeys", "AuthError"]
