"""PaCoRe as a tool of a tool-calling agent: create_pacore_tool, the compiled graph's
as_tool(), and one endpoint object serving both the agent and PaCoRe."""

import asyncio
import json

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.prebuilt import create_react_agent

from pacore_graph import create_pacore_graph, create_pacore_tool
from pacore_graph.testing import Reply
from tests.conftest import model_for

# Still the most used agent builder, though LangGraph 1.x points to langchain's create_agent.
pytestmark = pytest.mark.filterwarnings("ignore:create_react_agent has been moved")


class ToolCallingFake(GenericFakeChatModel):
    """Scripted agent model: its first reply calls the tool, its second one answers."""

    def bind_tools(self, tools, **kwargs):
        return self


def agent_model(args=None):
    call = {"name": "pacore", "args": args or {"problem": "What is 6*7?"}, "id": "call-1"}
    return ToolCallingFake(
        messages=iter([AIMessage("", tool_calls=[call]), AIMessage("PaCoRe says 42.")])
    )


def drafts_then(final):
    return FakeListChatModel(responses=["<think>a</think>41", "<think>b</think>42", final])


def run_agent(build, tool, mode):
    agent = build(agent_model(), [tool])
    question = {"messages": [("user", "Ask PaCoRe what 6*7 is.")]}
    if mode == "async":
        return asyncio.run(agent.ainvoke(question))
    return agent.invoke(question)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("build", [create_react_agent, create_agent], ids=["react", "agent"])
def test_create_pacore_tool_answers_inside_an_agent(build, mode):
    tool = create_pacore_tool(drafts_then("<think>c</think>\\boxed{42}"), rounds=2)
    out = run_agent(build, tool, mode)
    (result,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert result.content == "\\boxed{42}" and result.tool_call_id == "call-1"
    assert out["messages"][-1].content == "PaCoRe says 42."


def test_tool_shape_is_one_problem_string():
    tool = create_pacore_tool(drafts_then("x"), rounds=2, name="deep_think", description="Hard.")
    assert (tool.name, tool.description) == ("deep_think", "Hard.")
    assert list(tool.args) == ["problem"] and tool.args["problem"]["type"] == "string"
    assert tool.invoke({"problem": "Q"}) == "x"


def test_the_compiled_graphs_as_tool_works_in_an_agent():
    graph = create_pacore_graph(drafts_then("<think>c</think>\\boxed{42}"), rounds=2).compile()
    tool = graph.as_tool()
    assert tool.name == "pacore" and list(tool.args) == ["problem"]
    out = run_agent(create_react_agent, tool, "sync")
    (result,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert result.content == "\\boxed{42}"


async def test_one_endpoint_object_is_the_agents_model_and_pacores_backend(scripted):
    def respond(body):
        if body.get("tools"):  # the agent's own calls
            if any(m["role"] == "tool" for m in body["messages"]):
                return Reply(content="The answer is 42.")
            arguments = json.dumps({"problem": "What is 6*7?"})
            return Reply(
                tool_calls=[
                    {
                        "id": "call-7",
                        "type": "function",
                        "function": {"name": "pacore", "arguments": arguments},
                    }
                ]
            )
        return Reply(content="<think>6*7</think>\\boxed{42}")

    server = scripted(respond)
    llm = model_for(server)
    agent = create_agent(llm, [create_pacore_tool(llm, rounds=3)])
    out = await agent.ainvoke({"messages": [("user", "Use PaCoRe: 6*7?")]})
    (result,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert result.content == "\\boxed{42}"
    assert out["messages"][-1].content == "The answer is 42."
    pacore_calls = [b for b in server.requests if not b.get("tools")]
    assert len(pacore_calls) == 3 + 1
