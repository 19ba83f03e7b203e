"""The first-round pool (the paper's evaluation shortcut: each run draws its K_1 round-1
trajectories from a pool made once per problem) and the one bound on all model calls.
`EvalChatModel` answers the round-1 calls (``metadata["pacore_round"]`` and
``["pacore_index"]``) of a run with a draw in ``configurable`` from the pool, with their
recorded usage (it counts toward TTC), and passes every other call to the real model."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import openai
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import Field, PrivateAttr

from pacore_graph.eval.samples import Sample

DRAW_KEY = "pacore_eval_draw"
"""``configurable`` key of a run's draw: ``{"pool": problem key, "indices": [...]}``."""


def draw_indices(seed: int, setting: str, run: int, problem: str, k: int, n: int) -> list[int]:
    """The pool trajectories one run uses: ``k`` distinct indices out of ``n`` (``k <= n``,
    as `EvalSpec` checks), the same on a rerun or resume and independent across runs."""
    return random.Random(f"{seed}|{setting}|{run}|{problem}").sample(range(n), k)


def pooled_message(sample: Sample) -> AIMessage:
    """A pool trajectory as the model's reply, with its recorded usage."""
    prompt = sample["prompt_tokens"] or 0
    completion = sample["completion_tokens"] or 0
    return AIMessage(
        content=sample["content"],
        additional_kwargs={"reasoning_content": sample["reasoning"]} if sample["reasoning"] else {},
        response_metadata={"finish_reason": sample["finish_reason"], "pool_index": sample["index"]},
        usage_metadata={
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": prompt + completion,
        },
    )


class EvalChatModel(BaseChatModel):
    """The eval's model: round 1 served from the pool, and at most ``concurrency`` calls to
    the ``inner`` model in flight, across all problems and settings."""

    inner: BaseChatModel
    concurrency: int = Field(default=64, ge=1)
    pools: dict[str, list[Sample]] = Field(default_factory=dict, repr=False)
    """Each problem's round-1 pool by its key, in index order."""

    on_calls: Callable[[int], None] | None = None
    """Told the number of calls in flight whenever it changes (a progress bar)."""
    fatal_failure: BaseException | None = None
    """The last call's failure if it would fail every call (a refused connection, a rejected
    key or model) and no call succeeded since: "the endpoint is gone"."""

    _semaphore: asyncio.Semaphore = PrivateAttr()
    _in_flight: int = PrivateAttr(default=0)

    def model_post_init(self, context: Any, /) -> None:
        self._semaphore = asyncio.Semaphore(self.concurrency)

    @property
    def _llm_type(self) -> str:
        return "pacore-eval"

    @property
    def api_key(self) -> Any:
        """The real model's key, so the graph redacts it from failure messages."""
        return getattr(self.inner, "api_key", None)

    def _outcome(self, exc: BaseException | None) -> None:
        connection = isinstance(exc, openai.APIConnectionError)
        refused = connection and not isinstance(exc, openai.APITimeoutError)
        rejected = isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403, 404)
        if refused or rejected:
            self.fatal_failure = exc
        elif exc is None or isinstance(exc, openai.APIStatusError):  # the endpoint answered
            self.fatal_failure = None

    def _calls(self, change: int) -> None:
        self._in_flight += change
        if self.on_calls is not None:
            self.on_calls(self._in_flight)

    def _from_pool(self, config: RunnableConfig | None) -> AIMessage | None:
        config = config or {}
        draw = (config.get("configurable") or {}).get(DRAW_KEY)
        metadata = config.get("metadata") or {}
        if not draw or metadata.get("pacore_round") != 1:
            return None
        return pooled_message(self.pools[draw["pool"]][draw["indices"][metadata["pacore_index"]]])

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """A pooled round-1 trajectory, or the real model's reply within the bound."""
        if (pooled := self._from_pool(config)) is not None:
            return pooled
        async with self._semaphore:
            self._calls(1)
            try:
                message = await self.inner.ainvoke(input, config, stop=stop, **kwargs)
            except Exception as exc:
                self._outcome(exc)
                raise
            finally:
                self._calls(-1)
        self._outcome(None)
        return message

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        """The real model's reply, outside the pool and the bound: the eval calls `ainvoke`."""
        return self.inner._generate(messages, *args, **kwargs)
