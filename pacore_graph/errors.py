"""Errors raised by pacore-graph, each naming the problem in one line."""

from __future__ import annotations


class PaCoReError(Exception):
    """Base class of every error pacore-graph raises on purpose."""


class InvalidRoundsError(PaCoReError, ValueError):
    """The round vector is empty, not integers, zero/negative or an unknown preset."""


class InvalidInputError(PaCoReError, ValueError):
    """The input messages have no usable user message."""


class ContextLimitError(PaCoReError):
    """A synthesis prompt does not fit the configured context limit."""


class BackendUnreachableError(PaCoReError, ConnectionError):
    """The model endpoint cannot be reached."""
