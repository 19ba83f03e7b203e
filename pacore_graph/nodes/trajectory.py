"""``trajectory``: one model call, one Send task, so each has its own retry, checkpoint write
and stream."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.config import merge_configs
from langgraph.config import get_stream_writer
from langgraph.constants import TAG_NOSTREAM
from typing_extensions import TypedDict

from pacore_graph.compaction import resolve_compaction
from pacore_graph.context import PaCoReContext
from pacore_graph.settings import run_settings
from pacore_graph.state import Trajectory
from pacore_graph.template import message_text


class TrajectoryTask(TypedDict):
    """The payload of one ``Send``: every task of a round gets the same ``messages`` list."""

    messages: list[AnyMessage]
    round: int
    index: int
    final: bool


def _reasoning(message: AIMessage) -> str | None:
    for key in ("reasoning_content", "reasoning"):
        value = message.additional_kwargs.get(key)
        if isinstance(value, str) and value:
            return value
    if isinstance(message.content, list):
        parts = [
            b.get("reasoning") or b.get("thinking") or ""
            for b in message.content
            if isinstance(b, dict) and b.get("type") in ("reasoning", "thinking")
        ]
        return "".join(parts) or None
    return None


def make_trajectory_node(model: BaseChatModel, defaults: PaCoReContext) -> RunnableLambda:
    """The trajectory node, sync and async, calling ``model`` once per task."""

    def call_args(task: TrajectoryTask, config: RunnableConfig) -> tuple[RunnableConfig, dict]:
        settings = run_settings(defaults)
        # Only the final round's tokens stream to stream_mode="messages": K parallel
        # exploration streams interleaved would be noise.
        extra: RunnableConfig = {
            "metadata": {"pacore_round": task["round"], "pacore_index": task["index"]},
            "tags": [] if task["final"] else [TAG_NOSTREAM],
        }
        kwargs: dict[str, Any] = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "extra_body": settings.extra_body,
        }
        return merge_configs(config, extra), {k: v for k, v in kwargs.items() if v is not None}

    def record(task: TrajectoryTask, message: Any, started: float) -> dict[str, list[Trajectory]]:
        settings = run_settings(defaults)
        content = message_text(message)
        usage = getattr(message, "usage_metadata", None) or {}
        meta = message.response_metadata or {}
        finish = meta.get("finish_reason") or meta.get("stop_reason")
        traj = Trajectory(
            round=task["round"],
            index=task["index"],
            content=content,
            reasoning=_reasoning(message),
            message=resolve_compaction(settings.compaction)(content),  # type: ignore[arg-type]
            finish_reason=finish,
            truncated=finish in ("length", "max_tokens"),
            prompt_tokens=usage.get("input_tokens"),
            completion_tokens=usage.get("output_tokens"),
            latency_s=time.perf_counter() - started,
        )
        get_stream_writer()(
            {
                "type": "trajectory_finished",
                "round": traj["round"],
                "index": traj["index"],
                "completion_tokens": traj["completion_tokens"],
                "finish_reason": finish,
                "latency_s": traj["latency_s"],
            }
        )
        return {"trajectories": [traj]}

    def trajectory(task: TrajectoryTask, config: RunnableConfig) -> dict[str, list[Trajectory]]:
        started = time.perf_counter()
        call_config, kwargs = call_args(task, config)
        return record(task, model.invoke(task["messages"], call_config, **kwargs), started)

    async def atrajectory(
        task: TrajectoryTask, config: RunnableConfig
    ) -> dict[str, list[Trajectory]]:
        started = time.perf_counter()
        call_config, kwargs = call_args(task, config)
        message = await model.ainvoke(task["messages"], call_config, **kwargs)
        return record(task, message, started)

    return RunnableLambda(trajectory, afunc=atrajectory, name="trajectory")
