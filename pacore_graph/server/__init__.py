"""``pacore serve``: PaCoRe behind an OpenAI-compatible ``/v1/chat/completions``
(docs/serve.md). Importing this package loads nothing of the ``server`` extra until one of
its names is used, so ``pacore solve`` stays light."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pacore_graph.server.app import Service, create_app, v1_routes
    from pacore_graph.server.auth import ApiKeys
    from pacore_graph.server.models import model_rounds
    from pacore_graph.server.runs import thread_id_for
    from pacore_graph.server.settings import ServeSettings

_HOMES = {
    "ApiKeys": "auth",
    "ServeSettings": "settings",
    "Service": "app",
    "create_app": "app",
    "model_rounds": "models",
    "thread_id_for": "runs",
    "v1_routes": "app",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = [
    "ApiKeys",
    "ServeSettings",
    "Service",
    "create_app",
    "model_rounds",
    "thread_id_for",
    "v1_routes",
]
