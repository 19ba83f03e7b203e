"""Any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, hosted APIs) as a LangChain chat model.

Written on the ``openai`` SDK rather than langchain-openai's ``ChatOpenAI`` because
PaCoRe's record needs what that class loses: the separated thinking
(``reasoning_content`` / ``reasoning``), the per-call ``finish_reason`` and exact
per-call ``usage``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr, SecretStr

from pacore_graph.backends.replicas import Replica, ReplicaSet
from pacore_graph.errors import BackendUnreachableError

_SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens")


def _usage(usage: Any) -> UsageMetadata | None:
    if usage is None:
        return None
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    return UsageMetadata(
        input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
    )


def _reasoning(obj: Any) -> str | None:
    # vLLM's reasoning parsers used `reasoning_content`; newer servers say `reasoning`.
    extra = getattr(obj, "model_extra", None) or {}
    for key in ("reasoning_content", "reasoning"):
        value = getattr(obj, key, None) or extra.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class ChatOpenAICompatible(BaseChatModel):
    """A chat model on any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    One pooled HTTP client per endpoint (one per event loop for async calls), so
    thousands of trajectories share keep-alive connections; several endpoints are
    used as data-parallel replicas. Retries are left to
    the graph's ``RetryPolicy`` (``max_retries=0`` here) so a retry is visible
    and checkpointed per trajectory.

    The returned ``AIMessage`` keeps what PaCoRe records: ``content``, the
    separated thinking in ``additional_kwargs["reasoning_content"]``,
    ``response_metadata["finish_reason"]`` and exact ``usage_metadata``.

    Example:
        ```python
        model = ChatOpenAICompatible(base_url="http://127.0.0.1:8000/v1", model="pacore-8b")
        ```
    """

    model: str = Field(description="Model name as the server knows it.")
    base_url: str | list[str] = Field(
        description="Endpoint root, e.g. http://127.0.0.1:8000/v1; a list spreads calls over "
        "data-parallel replicas, least outstanding requests first, failing over on refusal."
    )
    api_key: SecretStr = Field(
        default_factory=lambda: SecretStr(os.environ.get("OPENAI_API_KEY", "EMPTY")),
        description="API key; defaults to $OPENAI_API_KEY. Never logged or checkpointed.",
    )
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    extra_body: dict[str, Any] | None = Field(
        default=None,
        description="Passed through verbatim (vLLM's top_k, chat_template_kwargs, ...).",
    )
    timeout: float | None = Field(default=None, description="Per-call timeout in seconds.")
    max_retries: int = 0
    default_headers: dict[str, str] | None = None

    replica_cooldown_s: float = Field(
        default=10.0, description="How long a replica that refused a connection is skipped."
    )

    _replicas: ReplicaSet = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        kwargs: dict[str, Any] = {
            "api_key": self.api_key.get_secret_value(),
            "max_retries": self.max_retries,
            "default_headers": self.default_headers,
        }
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        self._replicas = ReplicaSet(urls, kwargs, self.replica_cooldown_s)

    @property
    def replicas(self) -> list[Replica]:
        """The endpoints calls are spread over."""
        return self._replicas.replicas

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url}

    def _payload(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": convert_to_openai_messages(list(messages)),
        }
        for name in _SAMPLING_FIELDS:
            value = kwargs.pop(name, None)
            if value is None:
                value = getattr(self, name)
            if value is not None:
                payload[name] = value
        extra = {**(self.extra_body or {}), **(kwargs.pop("extra_body", None) or {})}
        if extra:
            payload["extra_body"] = extra
        if stop:
            payload["stop"] = stop
        payload.update(kwargs)
        return payload

    def _stream_payload(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, **kwargs: Any
    ) -> dict[str, Any]:
        payload = self._payload(messages, stop, **kwargs)
        return {**payload, "stream": True, "stream_options": {"include_usage": True}}

    def _result(self, response: Any) -> ChatResult:
        choice = response.choices[0]
        kwargs: dict[str, Any] = {}
        if reasoning := _reasoning(choice.message):
            kwargs["reasoning_content"] = reasoning
        message = AIMessage(
            content=choice.message.content or "",
            additional_kwargs=kwargs,
            response_metadata={
                "finish_reason": choice.finish_reason,
                "model_name": response.model,
            },
            usage_metadata=_usage(response.usage),
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": response.model},
        )

    @staticmethod
    def _chunks(chunk: Any) -> Iterator[ChatGenerationChunk]:
        for choice in chunk.choices or ():
            kwargs: dict[str, Any] = {}
            if reasoning := _reasoning(choice.delta):
                kwargs["reasoning_content"] = reasoning
            metadata: dict[str, Any] = {}
            if choice.finish_reason:
                metadata = {"finish_reason": choice.finish_reason, "model_name": chunk.model}
            if choice.delta.content or kwargs or metadata:
                yield ChatGenerationChunk(
                    message=AIMessageChunk(
                        content=choice.delta.content or "",
                        additional_kwargs=kwargs,
                        response_metadata=metadata,
                    )
                )
        if chunk.usage is not None:
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", usage_metadata=_usage(chunk.usage))
            )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        payload = self._payload(messages, stop, **kwargs)
        return self._result(
            self._replicas.call(lambda r: r.client.chat.completions.create(**payload))
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        payload = self._payload(messages, stop, **kwargs)
        return self._result(
            await self._replicas.acall(lambda r: r.async_client.chat.completions.create(**payload))
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        payload = self._stream_payload(messages, stop, **kwargs)
        stream, replica = self._replicas.open(
            lambda r: r.client.chat.completions.create(**payload)
        )
        try:
            with stream:
                for chunk in stream:
                    for gen in self._chunks(chunk):
                        if run_manager:
                            run_manager.on_llm_new_token(gen.text, chunk=gen)
                        yield gen
        finally:
            self._replicas.release(replica)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        payload = self._stream_payload(messages, stop, **kwargs)
        stream, replica = await self._replicas.aopen(
            lambda r: r.async_client.chat.completions.create(**payload)
        )
        try:
            async with stream:
                async for chunk in stream:
                    for gen in self._chunks(chunk):
                        if run_manager:
                            await run_manager.on_llm_new_token(gen.text, chunk=gen)
                        yield gen
        finally:
            self._replicas.release(replica)

    def list_models(self) -> list[str]:
        """Model ids the first reachable replica serves (``GET /models``).

        Raises:
            BackendUnreachableError: No replica answers.
        """
        try:
            return self._replicas.call(lambda r: [m.id for m in r.client.models.list()])
        except openai.APIConnectionError as exc:
            urls = ", ".join(r.base_url for r in self.replicas)
            raise BackendUnreachableError(
                f"cannot reach the model endpoint {urls}: {exc.__cause__ or exc}"
            ) from exc
