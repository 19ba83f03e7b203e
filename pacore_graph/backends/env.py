"""The model an app or example gets from its environment, so the same code runs anywhere."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import openai
from pydantic import SecretStr

from pacore_graph.backends.openai_compat import ChatOpenAICompatible
from pacore_graph.secrets import redact_url

BASE_URL_ENV = "PACORE_BASE_URL"
"""The OpenAI-compatible endpoint to use; unset, `model_from_env` starts the embedded model."""
MODEL_ENV = "PACORE_MODEL"
"""The model name at that endpoint; unset, its first ``/models`` entry."""


def model_for_endpoint(
    base_url: str,
    model: str | None = None,
    api_key: str | None = None,
    **kwargs: Any,
) -> ChatOpenAICompatible:
    """A model on an OpenAI-compatible endpoint; ``model=None`` takes the first one it serves.

    Probing ``/models`` first makes an unreachable endpoint fail at once, in one line.
    ``kwargs`` are further `ChatOpenAICompatible` fields (``timeout``, ``extra_body``, ...).
    Without ``api_key`` the key is the one in ``base_url`` (``http://user:KEY@host/v1``),
    else ``$OPENAI_API_KEY``, else ``"EMPTY"``.

    Raises:
        BackendUnreachableError: Nothing answers at ``base_url``.
    """
    # Unset, the model takes the URL's key or the environment's (its own default).
    key: dict[str, Any] = {"api_key": SecretStr(api_key)} if api_key else {}
    if not model:
        probe = ChatOpenAICompatible(base_url=base_url, model="", timeout=10, **key)
        served = probe.list_models()
        if not served:
            raise ValueError(f"{redact_url(base_url)} serves no model: name one")
        model = served[0]
    return ChatOpenAICompatible(base_url=base_url, model=model, **key, **kwargs)


def endpoint_from_env() -> str | None:
    """``$PACORE_BASE_URL``, or None when it is unset or blank."""
    return os.environ.get(BASE_URL_ENV, "").strip() or None


def endpoint_model_from_env(*, check: bool = False) -> ChatOpenAICompatible | None:
    """The model at ``$PACORE_BASE_URL`` named ``$PACORE_MODEL``, or None when no endpoint is
    set. Several replicas are one URL: a router's in front of them (docs/vllm.md).

    Args:
        check: Probe the endpoint also when ``$PACORE_MODEL`` names the model (without it
            the lookup of the first model is the probe), so a dead endpoint fails here, in
            one line, rather than on the first call. A server without ``/models`` passes.

    Raises:
        BackendUnreachableError: Nothing answers at the endpoint (when it was probed).
    """
    url = endpoint_from_env()
    if url is None:
        return None
    name = os.environ.get(MODEL_ENV)
    model = model_for_endpoint(url, name)
    if check and name:
        with contextlib.suppress(openai.APIStatusError):  # it answered: it is reachable
            model.list_models()
    return model


@contextlib.contextmanager
def model_from_env(*, check: bool = False) -> Iterator[ChatOpenAICompatible]:
    """`endpoint_model_from_env`, else the embedded CPU model, started here and stopped on
    exit.

    Args:
        check: Probe the endpoint also when ``$PACORE_MODEL`` names the model.

    Raises:
        BackendUnreachableError: Nothing answers at ``$PACORE_BASE_URL`` (when probed).
        EmbeddedBackendUnavailable: Without an endpoint, the embedded model cannot start;
            the message says what to install.
    """
    if (model := endpoint_model_from_env(check=check)) is not None:
        yield model
        return
    from pacore_graph.backends.embedded import EmbeddedServer

    with EmbeddedServer() as server:
        yield model_for_endpoint(server.base_url, server.model_name)
