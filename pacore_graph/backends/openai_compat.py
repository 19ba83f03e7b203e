"""Any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, hosted APIs) as a LangChain chat model.

Written on the ``openai`` SDK rather than langchain-openai's ``ChatOpenAI`` because
PaCoRe's record needs what that class loses: the separated thinking
(``reasoning_content`` / ``reasoning``), the per-call ``finish_reason`` and exact
per-call ``usage``.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx2
import openai
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.context import _tracing_v2_is_enabled
from langchain_core.utils.utils import LC_ID_PREFIX
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import Field, PrivateAttr, SecretStr

from pacore_graph.backends.replicas import AsyncTransport, Replica, ReplicaSet
from pacore_graph.errors import BackendUnreachableError, IncompleteResponseError

_SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens")


def _usage(usage: Any) -> UsageMetadata | None:
    if usage is None:
        return None
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    return UsageMetadata(
        input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
    )


def _check_finished(finished: bool, replica: Any) -> None:
    # A stream cut by a crashing server or proxy can end cleanly at the HTTP level; without a
    # finish_reason it is a partial answer, and ConnectionError makes it retried.
    if not finished:
        raise IncompleteResponseError(
            f"the stream from {replica.base_url} ended before a finish_reason (cut half way)"
        )


def _body(payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a payload: ``extra_body`` merged in, as the SDK does."""
    body = dict(payload)
    body.update(body.pop("extra_body", None) or {})
    return body


async def _sdk_create(replica: Replica, body: dict[str, Any]) -> Any:
    """``chat.completions.create`` without the SDK's request-parameter transform.

    The body is plain JSON already; the SDK's TypedDict walk over it cost ~1 ms of CPU a
    call (it grows with the synthesis prompt). Response parsing and errors are the SDK's.
    """
    if body.get("stream"):
        return await replica.async_client.post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )
    return await replica.async_client.post("/chat/completions", body=body, cast_to=ChatCompletion)


# -- async calls written directly on aiohttp ---------------------------------------------
#
# At hundreds of calls in flight the SDK's own layers (request and URL objects, header
# merging, httpx's pool, typed response construction) cost ~2.4 ms of CPU a call, against
# ~0.5 ms for the same request on aiohttp (benchmarks/run.py); in a round's burst of K x
# problems dispatches that is time the slowest trajectory waits before it starts. The
# results and errors are what the SDK gives: the response is read into objects with the
# same attribute names, an HTTP error is the SDK's own status error built from the
# response, and transport failures are `openai.APIConnectionError` /
# `openai.APITimeoutError` caused by the matching httpx exception.


class _Obj(dict):
    """A JSON object with attribute access (None when absent), as SDK models read."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)

    @property
    def model_extra(self) -> dict[str, Any]:
        return self


def _loads(raw: bytes | str) -> Any:
    return json.loads(raw, object_hook=_Obj)


def _httpx_request(url: str) -> httpx2.Request:
    return httpx2.Request("POST", url)


def _transport_error(exc: BaseException, url: str) -> openai.APIConnectionError:
    """The SDK's error for a transport failure, caused by the httpx exception it would see."""
    import aiohttp

    request = _httpx_request(url)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        cause: Exception = httpx2.ConnectTimeout(str(exc) or "connect timed out")
    elif isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        cause = httpx2.ReadTimeout(str(exc) or "read timed out")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cause = httpx2.ConnectError(str(exc))
    elif isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        cause = httpx2.RemoteProtocolError(str(exc) or type(exc).__name__)
    else:
        cause = httpx2.ReadError(str(exc) or type(exc).__name__)
    cause.__cause__ = exc
    if isinstance(cause, httpx2.TimeoutException):
        error: openai.APIConnectionError = openai.APITimeoutError(request=request)
    else:
        error = openai.APIConnectionError(request=request)
    error.__cause__ = cause
    return error


def _is_transport_error(exc: BaseException) -> bool:
    import aiohttp

    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError)


def _status_error(
    replica: Replica, url: str, status: int, headers: Any, raw: bytes
) -> openai.APIStatusError:
    """The SDK's exception for an HTTP error (RateLimitError, BadRequestError, ...)."""
    skip = {"content-encoding", "content-length", "transfer-encoding"}
    response = httpx2.Response(
        status,
        headers=[(k, v) for k, v in headers.items() if k.lower() not in skip],
        content=raw,
        request=_httpx_request(url),
    )
    return replica.async_client._make_status_error_from_response(response)


class _SSEStream:
    """Server-sent chunks of one streamed completion, as objects; closes the response."""

    def __init__(self, response: Any, url: str) -> None:
        self._response = response
        self._url = url

    async def __aenter__(self) -> _SSEStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._response.release()

    async def __aiter__(self) -> AsyncIterator[Any]:
        buffer = b""
        try:
            async for data in self._response.content.iter_any():
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    chunk = self._parse(line)
                    if chunk is _DONE:
                        return
                    if chunk is not None:
                        yield chunk
            chunk = self._parse(buffer)
            if chunk is not None and chunk is not _DONE:
                yield chunk
        except Exception as exc:
            _reraise(exc, self._url)

    def _parse(self, line: bytes) -> Any:
        line = line.strip()
        if not line.startswith(b"data:"):
            return None  # blank lines, comments, event: and id: fields
        data = line[5:].strip()
        if data == b"[DONE]":
            return _DONE
        chunk = _loads(data)
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise openai.APIError(
                message or "error in the stream", _httpx_request(self._url), body=error
            )
        return chunk


_DONE = object()


def _reraise(exc: BaseException, url: str) -> None:
    """Raises a transport failure as the SDK's error; anything else as it is."""
    if not _is_transport_error(exc):
        raise exc
    error = _transport_error(exc, url)
    raise error from error.__cause__


async def _aiohttp_create(
    replica: Replica,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout: Any,
) -> Any:
    """One chat completion (or an open `_SSEStream`) over the replica's aiohttp session."""
    url = replica.base_url.rstrip("/") + "/chat/completions"
    stream = bool(body.get("stream"))
    if stream:
        headers = {**headers, "Accept": "text/event-stream"}
    try:
        response = await replica.aio_session.post(
            url, data=json.dumps(body).encode(), headers=headers, timeout=timeout, **replica.proxy
        )
    except Exception as exc:
        _reraise(exc, url)
    if stream and response.status < 400:
        return _SSEStream(response, url)
    try:
        raw = await response.read()
    except Exception as exc:
        _reraise(exc, url)
    finally:
        response.release()
    if response.status >= 400:
        raise _status_error(replica, url, response.status, response.headers, raw)
    return _loads(raw)


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
    max_connections: int | None = Field(
        default=None,
        description="HTTP connections per replica (async); None: no limit, so every call "
        "the graph's max_concurrency lets through has its own connection at once.",
    )
    async_transport: AsyncTransport = Field(
        default="auto",
        description="How async calls are sent: 'aiohttp' (written directly on an aiohttp "
        "session: ~0.5 ms of CPU a call, whatever the calls in flight), 'openai' (the SDK "
        "on httpx: 2-15 ms a call, growing with the calls in flight) or 'auto' (aiohttp "
        "when installed). Results and exceptions are the same.",
    )

    _replicas: ReplicaSet = PrivateAttr()
    _aio: tuple[dict[str, str], Any] | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        urls = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        kwargs: dict[str, Any] = {
            "api_key": self.api_key.get_secret_value(),
            "max_retries": self.max_retries,
            "default_headers": self.default_headers,
        }
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        self._replicas = ReplicaSet(
            urls,
            kwargs,
            self.replica_cooldown_s,
            max_connections=self.max_connections,
            async_transport=self.async_transport,
        )

    def _aio_options(self) -> tuple[dict[str, str], Any]:
        """Headers and timeouts of direct aiohttp calls, as the SDK would send them."""
        if self._aio is None:
            import aiohttp

            headers = {
                "Authorization": f"Bearer {self.api_key.get_secret_value()}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"pacore-graph (openai-compatible; openai {openai.__version__})",
                **(self.default_headers or {}),
            }
            # The SDK's timeouts: a float applies to connecting and to each read; by
            # default 5 s to connect and 600 s to read.
            connect, read = (5.0, 600.0) if self.timeout is None else (self.timeout,) * 2
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
            self._aio = (headers, timeout)
        return self._aio

    async def _acreate(self, replica: Replica, payload: dict[str, Any]) -> Any:
        body = _body(payload)
        if replica.uses_aiohttp:
            headers, timeout = self._aio_options()
            return await _aiohttp_create(replica, body, headers, timeout)
        return await _sdk_create(replica, body)

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

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """LangChain's ``ainvoke``, with its callback plumbing skipped when nothing listens.

        With no callback handler, no tracing, no cache, no rate limiter and no streaming
        asked for, LangChain's run-manager set-up is pure overhead: ~0.5 ms of CPU a
        call, paid by every trajectory of a round's burst before its request is sent
        (``benchmarks/run.py``). The message returned is the one LangChain would return
        (same content, metadata and ``lc_run-`` id); anything listening takes the full path.
        """
        if not self._plain_call(config, kwargs):
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        messages = self._convert_input(input).to_messages()
        result = await self._agenerate(messages, stop=stop, **kwargs)
        generation = result.generations[0]
        message = generation.message
        if message.id is None:
            message.id = f"{LC_ID_PREFIX}-{uuid.uuid4()}-0"
        message.response_metadata = {
            **(result.llm_output or {}),
            **(generation.generation_info or {}),
            **message.response_metadata,
        }
        return message  # type: ignore[return-value]

    def _plain_call(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> bool:
        """True when a call has no observer, so LangChain's callback set-up can be skipped."""
        if (
            "stream" in kwargs
            or self.callbacks
            or self.cache is not None
            or self.rate_limiter is not None
            or self.output_version == "v1"
            or get_llm_cache() is not None
            or _tracing_v2_is_enabled()
        ):
            return False
        callbacks = (config or {}).get("callbacks")
        if callbacks is None:
            return True
        if isinstance(callbacks, BaseCallbackManager):
            return not callbacks.handlers and not callbacks.inheritable_handlers
        return not callbacks

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        payload = self._payload(messages, stop, **kwargs)
        return self._result(await self._replicas.acall(lambda r: self._acreate(r, payload)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        payload = self._stream_payload(messages, stop, **kwargs)
        stream, replica = self._replicas.open(lambda r: r.client.chat.completions.create(**payload))
        try:
            finished = False
            with stream:
                for chunk in stream:
                    for gen in self._chunks(chunk):
                        finished = finished or "finish_reason" in gen.message.response_metadata
                        if run_manager:
                            run_manager.on_llm_new_token(gen.text, chunk=gen)
                        yield gen
            _check_finished(finished, replica)
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
        stream, replica = await self._replicas.aopen(lambda r: self._acreate(r, payload))
        try:
            finished = False
            async with stream:
                async for chunk in stream:
                    for gen in self._chunks(chunk):
                        finished = finished or "finish_reason" in gen.message.response_metadata
                        if run_manager:
                            await run_manager.on_llm_new_token(gen.text, chunk=gen)
                        yield gen
            _check_finished(finished, replica)
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
