"""PaCoRe as a LangChain tool: a problem in, the answer text out, for any tool-calling agent
(``langgraph.prebuilt.create_react_agent``, ``langchain.agents.create_agent``, ...).
`pacore_graph.graph` builds the tool of a model (`create_pacore_tool`) and of a compiled
graph (``as_tool()``) on this module."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.pregel import Pregel
from pydantic import BaseModel, Field

from pacore_graph.messages import message_text

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


__all__ = ["DEFAULT_DESCRIPTION", "PaCoReToolInput", "pacore_tool"]
