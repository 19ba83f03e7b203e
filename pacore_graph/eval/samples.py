"""Independent trajectories of one problem as a checkpointed LangGraph thread
(``START ─Send×N→ sample → END``): the baselines' samples (``single``, ``sc@N``) and the
first-round pool, each sample a task with PaCoRe's retry policy, resumable like a run."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.config import merge_configs
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send, StateSnapshot
from typing_extensions import TypedDict

from pacore_graph.retry import DEFAULT_RETRY_POLICY
from pacore_graph.threads import ThreadStatus
from pacore_graph.trajectories import Trajectory, finished_record

SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "extra_body")
"""The PaCoRe context fields a sample call takes, so baselines sample like round 1."""


Sample = Trajectory
"""One trajectory sampled from the plain problem: a round-1 `Trajectory` record."""


class SampleTask(TypedDict):
    """The payload of one ``Send``."""

    messages: list[AnyMessage]
    index: int


class SamplingState(TypedDict, total=False):
    """The problem, how many samples, and the samples so far (in completion order)."""

    messages: list[AnyMessage]
    n: int
    samples: Annotated[list[Sample], operator.add]


def _fan_out(state: SamplingState) -> list[Send]:
    return [
        Send("sample", SampleTask(messages=state["messages"], index=i)) for i in range(state["n"])
    ]


def create_sampling_graph(model: BaseChatModel, sampling: Mapping[str, Any]) -> StateGraph:
    """The sampling graph, to compile with the eval's checkpointer and invoke with
    ``{"messages": [...], "n": N}``. ``model`` is called with ``sampling``'s
    `SAMPLING_FIELDS` (None ones not sent) and round-1 metadata, as PaCoRe's round 1 is."""
    kwargs = {k: v for k, v in sampling.items() if k in SAMPLING_FIELDS and v is not None}

    async def sample(task: SampleTask, config: RunnableConfig) -> dict[str, list[Sample]]:
        extra: RunnableConfig = {"metadata": {"pacore_round": 1, "pacore_index": task["index"]}}
        message = await model.ainvoke(task["messages"], merge_configs(config, extra), **kwargs)
        sample = finished_record(1, task["index"], message)
        event = {"type": "trajectory_finished", "round": 1, "index": task["index"]}
        get_stream_writer()(event | {k: sample[k] for k in ("completion_tokens", "finish_reason")})
        return {"samples": [sample]}

    builder = StateGraph(SamplingState)
    builder.add_node(
        "sample", RunnableLambda(sample, name="sample"), retry_policy=DEFAULT_RETRY_POLICY
    )
    builder.add_conditional_edges(START, _fan_out, ["sample"])
    builder.add_edge("sample", END)
    return builder


def sampling_status(snapshot: StateSnapshot, input: Mapping[str, Any]) -> ThreadStatus:
    """What a sampling thread's latest checkpoint means: resume it, read it back, or start it."""
    if snapshot.next:
        return "interrupted"
    if len(snapshot.values.get("samples") or []) == input["n"]:
        return "finished"
    return "new"
