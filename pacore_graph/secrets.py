"""Keeps API keys out of what pacore writes: records, checkpoints, errors, logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

REDACTED = "[redacted]"
_MIN_SECRET = 8  # shorter "keys" (e.g. "EMPTY", "none") are placeholders, and redacting them
# would mangle ordinary words


def model_secrets(model: Any) -> list[str]:
    """The secret values a chat model holds: its ``SecretStr`` fields and any ``api_key``."""
    candidates: list[object] = [
        v for v in getattr(model, "__dict__", {}).values() if isinstance(v, SecretStr)
    ]
    candidates += [getattr(model, n, None) for n in ("api_key", "openai_api_key")]
    found = {
        v.get_secret_value() if isinstance(v, SecretStr) else v
        for v in candidates
        if isinstance(v, SecretStr | str)
    }
    return sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and any ``Bearer`` token) replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, REDACTED)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


_BEARER = re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]{8,}")


class RedactingFilter(logging.Filter):
    """A logging filter that removes secrets from every record it passes."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= _MIN_SECRET]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True
