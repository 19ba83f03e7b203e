"""The round loop: ``create_pacore_graph`` wires prepare → (trajectory ×K → compact →
synthesize)* → answer as a LangGraph state machine."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.errors import InvalidUpdateError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer, Command, RetryPolicy, Send, StateSnapshot, StateUpdate
from pydantic import BaseModel

from pacore_graph._compat import sync_async_node
from pacore_graph.budget import round_budget
from pacore_graph.context import DEFAULTS, PaCoReContext, merge_context
from pacore_graph.errors import InvalidInputError
from pacore_graph.nodes.answer import answer
from pacore_graph.nodes.compact import compact
from pacore_graph.nodes.prepare import prepare
from pacore_graph.nodes.review import APPROVE, resume_error, review
from pacore_graph.nodes.synthesize import TokenCounter, estimate_tokens, synthesize
from pacore_graph.nodes.trajectory import TrajectoryNode, TrajectoryTask
from pacore_graph.resume import settings_key
from pacore_graph.retry import DEFAULT_RETRY_POLICY
from pacore_graph.rounds import RoundsSpec
from pacore_graph.state import PaCoReInput, PaCoReOutput, PaCoReState
from pacore_graph.tool import DEFAULT_DESCRIPTION, pacore_tool
from pacore_graph.trajectories import usage_totals
from pacore_graph.validation import check_settings


def round_tasks(state: PaCoReState, indices: Iterable[int] | None = None) -> list[Send]:
    """``Send``s for trajectories ``indices`` (all) of the round in progress, with what the
    round may still spend; each names its trajectory, not its prompt (built from the
    state), so no checkpoint stores a prompt."""
    r, key = state["round"], settings_key(state["settings"])
    if indices is None:
        indices = range(state["round_vector"][r - 1])
    final = r == len(state["round_vector"])
    spent, run = usage_totals(state["trajectories"])[0], f"{state['run_id']}:{r}"
    # The final call is never cut.
    budget = None if final else round_budget(state["settings"], state["started_at"], spent, run)
    tasks = (
        TrajectoryTask(round=r, index=i, final=final, budget=budget, settings=key, compact=n == 0)
        for n, i in enumerate(indices)
    )
    return [Send("trajectory", task) for task in tasks]


def route_after_compact(state: PaCoReState) -> str | list[Send]:
    """The answer after the final round; a resumed round short of its quorum retries; with
    the ``review`` setting, a person reviews the references before the next synthesis."""
    if state.get("retry"):
        return round_tasks(state, state["retry"])
    if state["round"] >= len(state["round_vector"]):
        return "answer"
    return "review" if state["settings"].get("review") else "synthesize"


def review_input(input: Any) -> Any:
    """``input``, with ``Command(resume=None)`` or ``{}`` (to LangGraph, no resume) as
    `APPROVE`; InvalidInputError, before the run, for a value no `review` pause takes."""
    if not isinstance(input, Command):
        return input
    if input.resume in (None, {}) and input.update is None and input.goto == ():
        return Command(graph=input.graph, resume=APPROVE)
    resume = input.resume  # a value, or values by interrupt id
    by_id = isinstance(resume, dict) and all(re.fullmatch("[0-9a-f]{32}", k) for k in resume)
    for value in resume.values() if by_id else [resume]:  # type: ignore[union-attr]
        if error := resume_error(value):
            raise InvalidInputError(error)
    return input


def check_edit(supersteps: Sequence[Sequence[StateUpdate]], snapshot: StateSnapshot) -> None:
    """InvalidUpdateError for an edit of a key PaCoRe derives, or of ``references`` where
    no round would be sent them (only after a compact, or before round 2's trajectories on)."""
    keys = {k for step in supersteps for u in step if isinstance(u.values, dict) for k in u.values}
    if other := sorted(keys - {"messages", "references"}):
        raise InvalidUpdateError(
            f"cannot edit {', '.join(other)}: PaCoRe derives it; edit 'references' (what the "
            "next round is sent) or 'messages'"
        )
    nxt = set(snapshot.next)
    later = nxt == {"trajectory"} and snapshot.values.get("rounds_done")
    if "references" in keys and not (nxt & {"review", "synthesize"} or later):
        raise InvalidUpdateError(
            "cannot edit 'references' here, no round would be sent them: edit them at a pause "
            "before review, synthesize, or a later round's trajectory"
        )


class CompiledPaCoReGraph(
    CompiledStateGraph[PaCoReState, PaCoReContext, PaCoReInput, PaCoReOutput]
):
    """A compiled PaCoRe graph whose ``as_tool()`` takes ``problem: str``, and which refuses
    a state edit or resume value it could not honour."""

    def stream(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        return super().stream(review_input(input), *args, **kwargs)

    def astream(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        return super().astream(review_input(input), *args, **kwargs)

    def bulk_update_state(
        self, config: RunnableConfig, supersteps: Sequence[Sequence[StateUpdate]]
    ) -> RunnableConfig:
        check_edit(supersteps, self.get_state(config))
        return super().bulk_update_state(config, supersteps)

    async def abulk_update_state(
        self, config: RunnableConfig, supersteps: Sequence[Sequence[StateUpdate]]
    ) -> RunnableConfig:
        check_edit(supersteps, await self.aget_state(config))
        return await super().abulk_update_state(config, supersteps)

    def as_tool(
        self,
        args_schema: type[BaseModel] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> BaseTool:
        """`pacore_tool`; with ``args_schema`` or ``arg_types``, LangChain's conversion."""
        if args_schema is not None or arg_types is not None:
            return super().as_tool(
                args_schema, name=name, description=description, arg_types=arg_types
            )
        return pacore_tool(
            self, name=name or self.name, description=description or DEFAULT_DESCRIPTION
        )


class PaCoReGraph(StateGraph[PaCoReState, PaCoReContext, PaCoReInput, PaCoReOutput]):
    """The ``StateGraph`` `create_pacore_graph` returns; it compiles a `CompiledPaCoReGraph`
    named ``pacore`` by default."""

    defaults: PaCoReContext  # where a run's context sets none

    def compile(
        self, checkpointer: Checkpointer = None, *, name: str | None = "pacore", **kwargs: Any
    ) -> CompiledPaCoReGraph:
        """``StateGraph.compile`` with ``name="pacore"`` by default."""
        compiled = super().compile(checkpointer, name=name, **kwargs)
        compiled.__class__ = CompiledPaCoReGraph
        return cast(CompiledPaCoReGraph, compiled)


def create_pacore_graph(
    model: BaseChatModel,
    *,
    rounds: RoundsSpec = "low",
    retry_policy: RetryPolicy | None = DEFAULT_RETRY_POLICY,
    token_counter: TokenCounter = estimate_tokens,
    **defaults: Any,
) -> PaCoReGraph:
    """Builds PaCoRe as an uncompiled ``StateGraph``; the caller picks checkpointer and store.

    Args:
        model: Any LangChain chat model, e.g. `ChatOpenAICompatible`.
        rounds: A preset (``"low"``/``"medium"``/``"high"``), an int, or the exploration
            rounds ``"32,4"`` / ``[32, 4]`` (`resolve_rounds`).
        retry_policy: Retry of each trajectory's call, honouring ``Retry-After``; a call
            that still fails is recorded as failed (`should_retry`).
        token_counter: Counts tokens for the ``context_limit`` check.
        **defaults: Defaults of any `PaCoReContext` field; a run's ``context=`` overrides
            them.

    Returns:
        The builder. The compiled graph takes ``{"messages": [...]}`` and returns
        ``{"messages": [..., answer], "pacore": record}`` (`PaCoReRun`).

    Raises:
        InvalidRoundsError: ``rounds`` is not a valid round vector, or is over ``max_k`` or
            ``max_trajectories``.
        InvalidSettingsError: A default has an impossible value.
        TypeError: A default names no `PaCoReContext` field.
    """
    base = merge_context(DEFAULTS, {"rounds": rounds, **defaults})
    check_settings(base)  # fail at build time, not on the first run
    builder = PaCoReGraph(
        PaCoReState,
        context_schema=PaCoReContext,
        input_schema=PaCoReInput,
        output_schema=PaCoReOutput,
    )
    builder.defaults = base
    builder.add_node("prepare", functools.partial(prepare, defaults=base))
    node = TrajectoryNode(model, base, retry_policy)
    builder.add_node(
        "trajectory", sync_async_node(node.run, node.arun, "trajectory"), destinations=("compact",)
    )
    builder.add_node("compact", functools.partial(compact, defaults=base))
    builder.add_node(
        "synthesize", functools.partial(synthesize, defaults=base, count=token_counter)
    )
    builder.add_node("review", review)
    builder.add_node("answer", answer)
    builder.add_edge(START, "prepare")
    builder.add_conditional_edges("prepare", round_tasks, ["trajectory"])
    builder.add_conditional_edges(
        "compact", route_after_compact, ["review", "synthesize", "answer", "trajectory"]
    )
    builder.add_edge("review", "synthesize")
    builder.add_conditional_edges("synthesize", round_tasks, ["trajectory"])
    builder.add_edge("answer", END)
    return builder


def create_pacore_tool(
    model: BaseChatModel,
    *,
    rounds: RoundsSpec = "low",
    name: str = "pacore",
    description: str = DEFAULT_DESCRIPTION,
    **defaults: Any,
) -> BaseTool:
    """PaCoRe on ``model`` as a LangChain tool (`pacore_tool`); ``rounds`` and ``**defaults``
    are `create_pacore_graph`'s, ``name`` and ``description`` what the agent's model sees."""
    graph = create_pacore_graph(model, rounds=rounds, **defaults).compile(name=name)
    return graph.as_tool(description=description)
