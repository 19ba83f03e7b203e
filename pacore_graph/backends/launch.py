"""The backend a command line names, opened: an OpenAI-compatible endpoint, the embedded CPU
model (started here, stopped on exit), or vLLM's engine in-process."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
from langchain_core.language_models import BaseChatModel

from pacore_graph.backends.env import model_for_endpoint
from pacore_graph.errors import InvalidSettingsError

EMBEDDED_MAX_TOKENS = 256
"""The embedded model is small and slow: calls stay short unless asked otherwise."""


@dataclass(frozen=True)
class OpenBackend:
    """A started backend and the limits a caller should respect."""

    model: BaseChatModel
    max_parallel: int | None = None
    """Requests it serves at once (the embedded server's slots); None: no limit of its own."""
    default_max_tokens: int | None = None
    """``max_tokens`` to use when the user gave none."""


def _deadline(timeout: float | None) -> dict[str, float]:
    """``timeout=`` for the model when one is given: None (no ``--timeout``) keeps the
    model's default deadline, where ``timeout=None`` would mean no limit at all."""
    return {} if timeout is None else {"timeout": timeout}


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
    ``base_url`` is given, else "embedded") and stops it on exit. ``model_kwargs`` are
    further `ChatOpenAICompatible` fields (e.g. ``max_concurrent_requests``) of the
    "openai" and "embedded" backends.

    Raises:
        InvalidSettingsError: ``kind`` lacks what it needs (an endpoint, a model path).
        BackendUnreachableError: No endpoint answers (when the model name must be looked up).
    """
    kind = kind or ("openai" if base_url else "embedded")
    if kind == "openai":
        if not base_url:
            raise InvalidSettingsError("--backend openai needs --base-url")
        chat = model_for_endpoint(base_url, model, api_key, **_deadline(timeout), **model_kwargs)
        if model:  # the name was not looked up: an unreachable endpoint fails now, in one line
            with contextlib.suppress(openai.APIStatusError):  # a server without /models is fine
                chat.list_models()
        yield OpenBackend(chat)
    elif kind == "embedded":
        from pacore_graph.backends.embedded import EmbeddedServer

        with EmbeddedServer(model_path=model) as server:
            chat = model_for_endpoint(
                server.base_url, server.model_name, api_key, **_deadline(timeout), **model_kwargs
            )
            yield OpenBackend(chat, server.n_parallel, EMBEDDED_MAX_TOKENS)
    elif kind == "vllm":
        from pacore_graph.backends.vllm import ChatVLLM

        if not model:
            raise InvalidSettingsError(
                "--backend vllm needs --model PATH (a Hugging Face model folder)"
            )
        engine = ChatVLLM(model=model)
        try:
            yield OpenBackend(engine)
        finally:
            engine.close()
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
