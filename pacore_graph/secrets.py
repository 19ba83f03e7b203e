"""Keeps API keys out of what pacore writes (records, checkpoints, errors, logs): `redact`
with the secrets of the model (`model_secrets`) or command line; `RedactingFilter` on logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from langchain_core.runnables import Runnable
from pydantic import SecretStr

REDACTED = "[redacted]"
_MIN_SECRET = 8  # shorter "keys" ("EMPTY", "none") are placeholders, and ordinary words

_KEY_WORDS = r"(?:api)?(?:key|token|secret|passw(?:or)?d|auth(?:orization)?|sig(?:nature)?)"
_KEY_NAME = re.compile(rf"(?:[^=&#\s]*[-_.])?{_KEY_WORDS}", re.IGNORECASE)
"""A query parameter that holds a credential: ``api_key``, ``access_token``,
``X-Amz-Signature``, ... (its last word names one; ``author`` does not)."""


def url_credentials(url: str) -> tuple[str, list[str], dict[str, str]]:
    """``url`` without its credentials or query; the credentials (password, key-naming query
    values, user, percent-decoded); the other query parameters.

    Example: ``http://me:KEY@host/v1?api-version=2`` is
    ``("http://host/v1", ["KEY", "me"], {"api-version": "2"})``.
    """
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = [v for k, v in query if _KEY_NAME.fullmatch(k) and v]
    found = [unquote(password)] if colon and password else []
    found += keys + ([unquote(user)] if at and user else [])
    bare = urlunsplit(parts._replace(netloc=host, query=""))
    return bare, found, {k: v for k, v in query if not _KEY_NAME.fullmatch(k)}


def url_secrets(url: str | None) -> list[str]:
    """The credentials in ``url`` (user, password, key-naming query values), if any."""
    return url_credentials(url)[1] if url else []


def redact_url(url: str) -> str:
    """``url`` (or a request target, ``/path?query``) with its credentials redacted."""
    return redact(url, [])


def model_secrets(model: Any) -> list[str]:
    """The secrets a chat model holds: ``SecretStr`` fields, any ``api_key``, the credentials
    of its ``base_url``, and those of the models it wraps (bindings, fallbacks, pools)."""
    found: set[str] = set()
    _collect(model, found, depth=0)
    return sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True)


def _collect(model: Any, found: set[str], depth: int) -> None:
    if depth > 4:  # wrappers of wrappers; deeper is no model configuration
        return
    for name in ("api_key", "openai_api_key"):
        value = _attribute(model, name)
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
        elif isinstance(value, str):
            found.add(value)
    for name in ("openai_api_base", "base_url"):
        if isinstance(url := _attribute(model, name), str):
            found.update(url_secrets(url))
    for value in getattr(model, "__dict__", {}).values():
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, Runnable) and item is not model:
                _collect(item, found, depth + 1)


def _attribute(model: Any, name: str) -> Any:
    """``model.name``, or None (a wrapper's forwarding property may fail in any way)."""
    try:
        return getattr(model, name, None)
    except Exception:
        return None


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, any ``Bearer`` token, the credentials of any URL and the
    values of key-naming query parameters replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(REDACTED + "@", text)
    if "=" in text:
        text = _QUERY_KEY.sub(rf"\g<1>{REDACTED}", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


_BEARER = re.compile(r"Bearer\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@?#]+@")
_QUERY_KEY = re.compile(rf"([?&]{_KEY_NAME.pattern}=)[^&#\s\"'<>]+", re.IGNORECASE)


class RedactingFilter(logging.Filter):
    """A logging filter that removes secrets from each record's message and tracebacks."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= _MIN_SECRET]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            # Formatted here so the handler prints the redacted text (Formatter.format
            # prints exc_text and formats exc_info only when exc_text is unset).
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text, self.secrets), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True
