"""Any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, hosted APIs) as a LangChain chat model:
``BaseChatOpenAI`` plus the thinking, a deadline, a size limit and a check of each reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from typing import Any, Self, cast

import aiohttp
import httpx2
import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import Field, PrivateAttr, SecretStr, model_validator

from pacore_graph.backends.clients import (
    KERNEL_CONNECT_LIMIT,
    ChatCompletions,
    LazySyncClient,
    LoopClients,
    environment_proxy,
)
from pacore_graph.backends.deadline import (
    CONNECT_S,
    DEADLINE_S,
    STALL_S,
    DeadlineExceeded,
    cause_of,
    deadline_message,
    stall_message,
    until_deadline,
)
from pacore_graph.backends.direct import DirectRequest, post_chat_completion
from pacore_graph.backends.limit import CallLimit
from pacore_graph.backends.replies import checked_chunk, checked_completion, reasoning, undecodable
from pacore_graph.backends.size import MAX_REPLY_BYTES, StreamSize
from pacore_graph.errors import (
    BackendUnreachableError,
    CallTimeoutError,
    IncompleteResponseError,
    MalformedResponseError,
)
from pacore_graph.secrets import url_credentials


def _stall_env() -> float:  # langchain-openai's variable, else ours
    with contextlib.suppress(KeyError, ValueError):
        return float(os.environ["LANGCHAIN_OPENAI_STREAM_CHUNK_TIMEOUT_S"])
    return STALL_S


class ChatOpenAICompatible(BaseChatOpenAI):
    """A chat model on any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    ``BaseChatOpenAI`` with PaCoRe's defaults (no SDK retries: the graph retries, usage in
    streams, one pool per event loop); the thinking goes to
    ``additional_kwargs["reasoning_content"]``. Credentials in ``base_url`` become the API
    key unless ``api_key`` is given. Errors: README.md, "Failure behaviour".

    Example:
        ```python
        model = ChatOpenAICompatible(base_url="http://127.0.0.1:8000/v1", model="pacore-8b")
        ```
    """

    openai_api_key: SecretStr | None = Field(
        alias="api_key",
        default_factory=lambda: SecretStr(os.environ.get("OPENAI_API_KEY") or "EMPTY"),
        description="API key; defaults to $OPENAI_API_KEY, else 'EMPTY'. Never logged.",
    )
    request_timeout: float | tuple[float, float] | Any | None = Field(
        default=DEADLINE_S,
        alias="timeout",
        description="The deadline of one call in seconds, first byte sent to last received "
        "(then CallTimeoutError); connecting has 5 s of it. None: no limit; an httpx2.Timeout "
        "(or a tuple) keeps the SDK's per-read limits instead.",
    )
    stream_chunk_timeout: float | None = Field(
        default_factory=_stall_env,
        exclude=True,
        description="Seconds a stream may send nothing (keep-alive comments do not count) "
        "before CallTimeoutError. None or 0: no stall limit.",
    )
    max_retries: int | None = 0
    stream_usage: bool | None = True
    use_responses_api: bool | None = False
    direct_http: bool = Field(
        default=True,
        description="Send plain async chat completions directly on aiohttp (same results "
        "and exceptions, less CPU); False sends every call through the SDK.",
    )
    max_connections: int | None = Field(
        default=None,
        description="Async HTTP connections per event loop; None: no limit.",
    )
    max_concurrent_requests: int | None = Field(
        default=None,
        ge=1,
        description="Calls in flight at once over every user of this model object; further "
        "calls wait their turn. None: no limit.",
    )
    max_reply_bytes: int | None = Field(
        default=MAX_REPLY_BYTES,
        ge=1,
        description="The size limit of one reply in bytes (a stream's: its content and "
        "thinking): past it, ReplyTooLargeError, not retried. None: no limit.",
    )
    _limit: CallLimit = PrivateAttr(default_factory=lambda: CallLimit(None))
    _deadline: float | None = PrivateAttr(default=None)  # a number request_timeout sets one
    _stall_s: float | None = PrivateAttr(default=None)  # when shorter than the deadline
    # Our clients' timeouts of a stream: the stall limit for reads.
    _stream_timeout: httpx2.Timeout | None = PrivateAttr(default=None)
    _astream_timeout: httpx2.Timeout | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _use_our_clients(cls, values: Any) -> Any:
        """Credentials out of ``base_url``; our clients unless the caller brought one."""
        if not isinstance(values, dict):
            return values
        values = _credentials_to_key(values)
        given = ("async_client", "root_async_client", "http_async_client", "openai_proxy")
        if not any(values.get(k) for k in given):
            pools = LoopClients()
            values = {**values, "root_async_client": pools, "async_client": ChatCompletions(pools)}
        if not any(values.get(k) for k in ("client", "root_client", "http_client", "openai_proxy")):
            sync = LazySyncClient()
            values = {**values, "root_client": sync, "client": ChatCompletions(sync)}
        return values

    @model_validator(mode="after")
    def _configure_clients(self) -> Self:
        """Configures our clients with the key, the URL and the limits."""
        kwargs: dict[str, Any] = {
            "api_key": self.openai_api_key.get_secret_value() if self.openai_api_key else None,
            "base_url": self.openai_api_base,
            "organization": self.openai_organization,
            "max_retries": self.max_retries or 0,
            "default_headers": self.default_headers,
            "default_query": self.default_query,
        }
        timeout, stall = self.request_timeout, self.stream_chunk_timeout
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            self._deadline = float(timeout)
            self._stall_s = stall if stall and 0 < stall < timeout else None
        deadline = self._deadline
        connect = None if deadline is None else min(CONNECT_S, deadline)
        if isinstance(self.root_async_client, LoopClients):
            self.root_async_client.max_bytes = self.max_reply_bytes
            # The deadline (asyncio.timeout) bounds the whole call: a non-streamed answer
            # needs no per-read timer; a stream reads within the stall limit.
            if deadline is not None:
                timeout = httpx2.Timeout(None, connect=connect)
                self._astream_timeout = httpx2.Timeout(None, connect=connect, read=self._stall_s)
            self.root_async_client.configure(
                self.max_connections, self._direct(), **kwargs, timeout=timeout
            )
        if isinstance(self.root_client, LazySyncClient):
            # Per-read timeouts within the deadline (the stall limit for a stream), and
            # DeadlineTransport checking the deadline between reads.
            timeout = self.request_timeout
            if deadline is not None:
                timeout = httpx2.Timeout(deadline, connect=connect)
                stall = self._stall_s or deadline
                self._stream_timeout = httpx2.Timeout(deadline, connect=connect, read=stall)
            self.root_client.configure(
                kwargs,
                timeout=timeout,
                deadline=deadline,
                max_bytes=self.max_reply_bytes,
                socket_options=self.http_socket_options,
            )
        self._limit = CallLimit(self.max_concurrent_requests)
        return self

    def _direct(self) -> DirectRequest | None:
        """The direct path's request options; None where only the SDK knows how to send."""
        url, timeout = self.openai_api_base, self.request_timeout
        if (
            not self.direct_http
            or not url
            or not isinstance(self.openai_api_key, SecretStr)
            or self.default_query
            or not (timeout is None or isinstance(timeout, int | float | httpx2.Timeout))
            or environment_proxy(url) is not None
        ):
            return None
        headers = {
            "Authorization": f"Bearer {self.openai_api_key.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"AsyncOpenAI/Python {openai.__version__}",
        }
        if self.openai_organization:
            headers["OpenAI-Organization"] = self.openai_organization
        headers.update(self.default_headers or {})
        # A number is the deadline, kept by _agenerate; reads have no limit of their own.
        connect = read = None
        if isinstance(timeout, httpx2.Timeout):
            connect, read = timeout.connect, timeout.read
        elif timeout is not None and not KERNEL_CONNECT_LIMIT:
            connect = min(CONNECT_S, float(timeout))
        return DirectRequest(
            url=url.rstrip("/") + "/chat/completions",
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read),
            max_bytes=self.max_reply_bytes,
        )

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @property
    def async_clients(self) -> int:
        """How many event loops hold a pooled async client now."""
        clients = self.root_async_client
        return len(clients) if isinstance(clients, LoopClients) else 0

    def _get_request_payload(
        self,
        input_: LanguageModelInput,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> dict:
        # A call's extra_body adds to the model's rather than replacing it.
        if self.extra_body and kwargs.get("extra_body"):
            kwargs["extra_body"] = {**self.extra_body, **kwargs["extra_body"]}
        return super()._get_request_payload(input_, stop=stop, **kwargs)

    def _timeout(self, message: str) -> CallTimeoutError:
        """A `CallTimeoutError` naming the request, as the SDK's errors do."""
        base = (self.openai_api_base or "https://api.openai.com/v1").rstrip("/")
        return CallTimeoutError(message, request=httpx2.Request("POST", f"{base}/chat/completions"))

    def _timeout_error(
        self, exc: BaseException, streamed: bool, client: object
    ) -> CallTimeoutError | None:
        """The `CallTimeoutError` a read timeout on our ``client`` means; None: the SDK's."""
        deadline = self._deadline
        if deadline is None or not isinstance(client, LazySyncClient | LoopClients):
            return None
        if (cause := cause_of(exc, DeadlineExceeded)) is not None:
            return self._timeout(str(cause))
        if cause_of(exc, httpx2.ReadTimeout) is None:
            return None
        if streamed and self._stall_s is not None:
            return self._timeout(stall_message(self._stall_s))
        return self._timeout(deadline_message(deadline))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The base class's call within the concurrency limit, its errors named."""
        with self._limit.hold(), self._named_errors(self.root_client, streamed=False):
            return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The call within the concurrency limit, then the deadline: a plain chat completion
        goes the direct path, anything else the SDK."""
        clients = self.root_async_client
        direct = clients.direct if isinstance(clients, LoopClients) else None
        async with self._limit.ahold():
            seconds = self._deadline
            timer = asyncio.timeout(seconds)
            try:
                async with timer:
                    payload = self._get_request_payload(messages, stop=stop, **kwargs)
                    if (
                        direct is None
                        or self.use_responses_api
                        or self.include_response_headers
                        or "response_format" in payload
                    ):
                        with self._named_errors(clients, streamed=False):
                            return await super()._agenerate(messages, stop, run_manager, **kwargs)
                    body = {k: v for k, v in payload.items() if k != "extra_body"}
                    body.update(payload.get("extra_body") or {})  # as the SDK merges it
                    response = await post_chat_completion(
                        clients.session(), direct, body, clients.current
                    )
                    return self._create_chat_result(response)
            except TimeoutError:
                if seconds is not None and timer.expired():
                    raise self._timeout(deadline_message(seconds)) from None
                raise

    def _create_chat_result(
        self,
        response: dict | openai.BaseModel,
        generation_info: dict | None = None,
    ) -> ChatResult:
        """The base class's result of the checked reply, with the thinking."""
        typed = response if isinstance(response, openai.BaseModel) else None
        # The SDK builds its objects without validating them: check what it received, leaving
        # structured output's parsed object out of the dump as the base class does.
        exclude = {"choices": {"__all__": {"message": {"parsed"}}}}
        data = checked_completion(
            typed.model_dump(exclude=exclude, warnings=False) if typed is not None else response
        )
        result = super()._create_chat_result(data, generation_info)
        if typed is not None:  # what the base class takes from the SDK's object
            extra = result.generations[0].message.additional_kwargs
            message: Any = getattr(typed.choices[0], "message", None)  # type: ignore[attr-defined]
            for key in ("parsed", "refusal"):  # the refusal as checked, the parsed object kept
                if hasattr(message, key):
                    extra[key] = data["choices"][0]["message"].get(key, getattr(message, key))
        for generation, choice in zip(result.generations, data["choices"], strict=False):
            if thinking := reasoning(choice["message"]):
                generation.message.additional_kwargs["reasoning_content"] = thinking
        return result

    def _convert_chunk_to_generation_chunk(
        self,
        chunk: dict,
        default_chunk_class: type,
        base_generation_info: dict | None,
    ) -> ChatGenerationChunk | None:
        chunk = checked_chunk(chunk)
        generation = super()._convert_chunk_to_generation_chunk(
            chunk, default_chunk_class, base_generation_info
        )
        choices = chunk.get("choices")
        if generation is not None and choices and (thinking := reasoning(choices[0]["delta"])):
            generation.message.additional_kwargs["reasoning_content"] = thinking
        return generation

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self._stream_timeout is not None:  # our client's, unless the call brings one
            kwargs.setdefault("timeout", self._stream_timeout)
        with self._limit.hold(), self._checked(self.root_client) as check:
            chunks = super()._stream(messages, stop, run_manager, **kwargs)
            # Closing the chunks closes the response: a stream stopped early hangs up.
            with contextlib.closing(cast("Generator[ChatGenerationChunk]", chunks)):
                for generation in chunks:
                    yield check(generation)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self._astream_timeout is not None:  # as in _stream
            kwargs.setdefault("timeout", self._astream_timeout)
        chunks = cast(
            "AsyncGenerator[ChatGenerationChunk]",
            super()._astream(messages, stop, run_manager, **kwargs),
        )
        if (seconds := self._deadline) is not None:
            chunks = until_deadline(
                chunks, seconds, lambda: self._timeout(deadline_message(seconds))
            )
        async with self._limit.ahold(), contextlib.aclosing(chunks):  # closed: as in _stream
            with self._checked(self.root_async_client) as check:
                async for generation in chunks:
                    yield check(generation)

    @contextlib.contextmanager
    def _named_errors(self, clients: object, streamed: bool) -> Iterator[None]:
        """A call's failures under the names they have here rather than the SDK's."""
        try:
            yield
        except Exception as exc:
            if isinstance(exc, CallTimeoutError):  # until_deadline's: named already
                raise
            error: Exception | None = None
            if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
                error = self._timeout_error(exc, streamed, clients)  # httpx2's: not wrapped
            elif streamed and isinstance(exc, TimeoutError) and self.stream_chunk_timeout:
                error = self._timeout(stall_message(self.stream_chunk_timeout))  # no chunk came
            # The base class calls chunk.model_dump() on an event the SDK could not make a
            # chunk of (no JSON object: a list, a number), before checked_chunk sees it.
            elif streamed and isinstance(exc, AttributeError) and exc.name == "model_dump":
                error = MalformedResponseError("malformed reply: a stream chunk is not an object")
            elif isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):  # the SDK's parse
                error = undecodable(exc)
            if error is None:
                raise
            raise error from exc

    @contextlib.contextmanager
    def _checked(self, clients: object) -> Iterator[Callable[[ChatGenerationChunk], Any]]:
        """A check of each chunk of a stream (the size limit), its failures named, and at its
        end `IncompleteResponseError` (retried) unless a finish_reason came: a stream cut by
        a crashing server or proxy can end cleanly."""
        size, finished = StreamSize(self.max_reply_bytes), False

        def check(generation: ChatGenerationChunk) -> ChatGenerationChunk:
            nonlocal finished
            size.add(generation.message)
            reason = (generation.generation_info or {}).get("finish_reason")
            meta = generation.message.response_metadata
            finished = finished or bool(reason or meta.get("finish_reason"))
            return generation

        with self._named_errors(clients, streamed=True):
            yield check
        if not finished:
            raise IncompleteResponseError(
                f"the stream from {self.openai_api_base} ended before a finish_reason "
                "(cut half way)"
            )

    def list_models(self) -> list[str]:
        """Model ids the endpoint serves (``GET /models``).

        Raises:
            BackendUnreachableError: Nothing answers at ``base_url``.
        """
        try:
            return [m.id for m in self.root_client.models.list()]
        except openai.APIConnectionError as exc:
            raise BackendUnreachableError(
                f"cannot reach the model endpoint {self.openai_api_base}: {exc.__cause__ or exc}"
            ) from exc


def _credentials_to_key(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the credentials (the API key unless one is given) and the query
    (to ``default_query``) out of ``base_url``: HTTP clients would send them as Basic auth,
    log them, and join paths after the query."""
    for name in ("base_url", "openai_api_base"):
        url = values.get(name)
        if isinstance(url, str):
            bare, found, query = url_credentials(url)
            if bare != url:
                values = {**values, name: bare}
                if found and not any(values.get(k) for k in ("api_key", "openai_api_key")):
                    values["api_key"] = SecretStr(found[0])
                if query:
                    values["default_query"] = {**query, **(values.get("default_query") or {})}
    return values
