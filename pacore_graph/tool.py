"""PaCoRe as a LangChain tool for any tool-calling agent: a problem in, the answer text out."""

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


def pacore_tool(
    graph: Pregel[Any, Any, Any, Any],
    *,
    name: str = "pacore",
    description: str = DEFAULT_DESCRIPTION,
) -> BaseTool:
    """A compiled PaCoRe graph as a tool taking ``problem: str`` and returning the answer
    text; each call is a fresh run under the agent's ``config`` (its trace and stream)."""

    def run(problem: str, config: RunnableConfig) -> str:
        out = graph.invoke({"messages": [{"role": "user", "content": problem}]}, config)
        return message_text(out["messages"][-1])

    async def arun(problem: str, config: RunnableConfig) -> str:
        out = await graph.ainvoke({"messages": [{"role": "user", "content": problem}]}, config)
        return message_text(out["messages"][-1])

    return StructuredTool.from_function(
        func=run, coroutine=arun, name=name, description=description, args_schema=PaCoReToolInput
    )
