"""PaCoRe as a LangChain tool: a problem in, the answer text out, for any tool-calling agent
(``langgraph.prebuilt.create_react_agent``, ``langchain.agents.create_agent``, ...)."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.pregel import Pregel
from pydantic import BaseModel, Field

from pacore_graph.messages import message_text
from pacore_graph.rounds import RoundsSpec

DEFAULT_DESCRIPTION = (
    "Solves a hard reasoning problem (mathematics, logic, code) by parallel coordinated "
    "reasoning: many independent attempts, then a synthesis of their conclusions. Slow and "
    "thorough; give it the complete, self-contained problem statement."
)


class PaCoReToolInput(BaseModel):
    """The tool's one argument."""

    problem: str = Field(description="The complete, self-contained problem to solve.")


def _input(problem: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": problem}]}


def _answer(output: dict[str, Any]) -> str:
    return message_text(output["messages"][-1])


def pacore_tool(
    graph: Pregel[Any, Any, Any, Any],
    *,
    name: str = "pacore",
    description: str = DEFAULT_DESCRIPTION,
) -> BaseTool:
    """A compiled PaCoRe graph as a tool taking ``problem: str`` and returning the answer text.

    Each call is a fresh run of one user message; the agent's callbacks and limits (its
    ``config``) pass through, so the run shows up inside the agent's trace and stream.
    """

    def run(problem: str, config: RunnableConfig) -> str:
        return _answer(graph.invoke(_input(problem), config))

    async def arun(problem: str, config: RunnableConfig) -> str:
        return _answer(await graph.ainvoke(_input(problem), config))

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description,
        args_schema=PaCoReToolInput,
    )


def create_pacore_tool(
    model: BaseChatModel,
    *,
    rounds: RoundsSpec = "low",
    name: str = "pacore",
    description: str = DEFAULT_DESCRIPTION,
    **defaults: Any,
) -> BaseTool:
    """PaCoRe on ``model`` as a ready LangChain tool, sync and async.

    Args:
        model: The chat model PaCoRe calls (it may also be the agent's own model).
        rounds: PaCoRe's round vector (see `create_pacore_graph`).
        name: The tool's name as the agent's model sees it.
        description: What the agent's model reads to decide when to call it.
        **defaults: Further `PaCoReContext` settings (``temperature``, ``max_tokens``, ...).

    Returns:
        A tool with one argument, ``problem: str``, that returns the answer's text.

    Raises:
        InvalidRoundsError: ``rounds`` is not a valid round vector.

    Example:
        ```python
        from langgraph.prebuilt import create_react_agent

        agent = create_react_agent(llm, [create_pacore_tool(llm, rounds="medium")])
        ```
    """
    from pacore_graph.graph import create_pacore_graph  # graph.py builds tools on this module

    graph = create_pacore_graph(model, rounds=rounds, **defaults).compile(name=name)
    return pacore_tool(graph, name=name, description=description)


__all__ = ["DEFAULT_DESCRIPTION", "PaCoReToolInput", "create_pacore_tool", "pacore_tool"]
