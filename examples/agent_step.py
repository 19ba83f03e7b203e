"""PaCoRe as the reasoning step of a tool-using agent.

The parent graph is an ordinary LangGraph agent: one node decides to call a tool,
the tool runs, and the hard step (the arithmetic over the tool's facts) goes to
PaCoRe, which answers like any chat-model step. The last node reads the answer.

    python examples/agent_step.py            # embedded CPU model
    PACORE_BASE_URL=http://127.0.0.1:8000/v1 python examples/agent_step.py
"""

from __future__ import annotations

import argparse
import re

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from pacore_graph import create_pacore_graph, model_from_env

ORCHARDS = {"north": (17, 23), "south": (12, 15)}


@tool
def orchard_layout(orchard: str) -> str:
    """Rows and trees per row of an orchard."""
    rows, per_row = ORCHARDS[orchard]
    return f"The {orchard} orchard has {rows} rows with {per_row} trees in each row."


def plan(state: MessagesState) -> dict:
    """An ordinary step: look the orchard up before reasoning about it."""
    call = {"name": "orchard_layout", "args": {"orchard": "north"}, "id": "layout-1"}
    return {"messages": [AIMessage("", tool_calls=[call])]}


def report(state: MessagesState) -> dict:
    """An ordinary step: pull the boxed number out of PaCoRe's answer."""
    answer = state["messages"][-1].content
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", answer)
    summary = f"Trees in the north orchard: {boxed[-1] if boxed else answer.strip()[:200]}"
    return {"messages": [AIMessage(summary, name="report")]}


def build_agent(model, rounds="low"):
    """The parent agent graph with PaCoRe compiled in as its ``reason`` node."""
    agent = StateGraph(MessagesState)
    agent.add_node("plan", plan)
    agent.add_node("tools", ToolNode([orchard_layout]))
    agent.add_node("reason", create_pacore_graph(model, rounds=rounds).compile())
    agent.add_node("report", report)
    agent.add_edge(START, "plan")
    agent.add_edge("plan", "tools")
    agent.add_edge("tools", "reason")
    agent.add_edge("reason", "report")
    agent.add_edge("report", END)
    return agent.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", default="low")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    question = (
        "How many trees are in the north orchard? Use the tool result and put the final "
        "answer in \\boxed{}."
    )
    with model_from_env() as model:
        agent = build_agent(model, args.rounds)
        out = agent.invoke(
            {"messages": [("user", question)]}, context={"max_tokens": args.max_tokens}
        )
    print(out["messages"][-1].content)


if __name__ == "__main__":
    main()
