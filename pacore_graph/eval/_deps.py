"""The eval extra's libraries, imported only when used, so ``pacore solve`` never needs them."""

from __future__ import annotations

import importlib
from types import ModuleType


class EvalDependencyError(ImportError):
    """A library of the ``eval`` extra is missing; the message says how to install it."""


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module`` or raises `EvalDependencyError` naming the extra to install and
    the ``purpose`` it is needed for."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EvalDependencyError(
            f"{purpose} needs {module}, which is not installed: pip install 'pacore-graph[eval]'"
        ) from exc
