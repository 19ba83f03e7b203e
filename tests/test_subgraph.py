"""PaCoRe as one step of a larger agent, on LangChain's fake chat models."""

from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from pacore_graph import create_pacore_graph, to_record


@tool
def lookup_rate(city: str) -> str:
    """The tax rate of a city."""
    return f"The tax rate in {city} is 7%."


def test_pacore_is_a_reasoning_step_of_a_tool_using_agent():
    def plan(state: MessagesState):
        # An ordinary agent step that decides to call a tool first.
        return {
            "messages": [
                AIMessage(
                    "",
                    tool_calls=[{"name": "lookup_rate", "args": {"city": "Oslo"}, "id": "call-1"}],
                )
            ]
        }

    def ask(state: MessagesState):
        return {"messages": [HumanMessage("So what is the tax on 200?")]}

    responses = [f"<think>t{i}</think>The tax is 14." for i in range(3)] + ["Final: 14"]
    pacore = create_pacore_graph(FakeListChatModel(responses=responses), rounds=3).compile()
    parent = StateGraph(MessagesState)
    parent.add_node("plan", plan)
    parent.add_node("tools", ToolNode([lookup_rate]))
    parent.add_node("ask", ask)
    parent.add_node("reason", pacore)
    parent.add_edge(START, "plan")
    parent.add_edge("plan", "tools")
    parent.add_edge("tools", "ask")
    parent.add_edge("ask", "reason")
    parent.add_edge("reason", END)
    app = parent.compile(checkpointer=InMemorySaver())

    out = app.invoke(
        {"messages": [("user", "Plan a purchase in Oslo.")]},
        {"configurable": {"thread_id": "agent-1"}},
    )
    messages = out["messages"]
    assert set(out) == {"messages"}  # PaCoRe's internals stay inside the subgraph
    assert isinstance(messages[2], ToolMessage) and "7%" in messages[2].content
    answer = messages[-1]
    assert type(answer) is AIMessage and answer.content == "Final: 14"
    assert answer.usage_metadata is not None
    assert len(messages) == 5  # user, tool call, tool result, follow-up, answer


async def test_generic_chat_model_backend_async_and_multi_turn():
    model = GenericFakeChatModel(
        messages=iter(
            [AIMessage(f"candidate {i}") for i in range(4)]
            + [AIMessage("second answer")]
            + [AIMessage(f"again {i}") for i in range(4)]
            + [AIMessage("third answer")]
        )
    )
    graph = create_pacore_graph(model, rounds=4).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "chat"}, "max_concurrency": 1}
    first = await graph.ainvoke({"messages": [("user", "q1")]}, config)
    assert first["messages"][-1].content == "second answer"
    second = await graph.ainvoke({"messages": [("user", "q2")]}, config)
    # The second turn starts clean: only its own 5 trajectories are recorded.
    assert len(second["pacore"]["trajectories"]) == 5
    assert second["messages"][-1].content == "third answer"
    assert [m.type for m in second["messages"]] == ["human", "ai", "human", "ai"]


class RagState(MessagesState):
    references: list[str]
    round: int


def test_the_subgraph_leaves_the_parents_other_keys_alone():
    responses = [f"<think>t{i}</think>draft {i}" for i in range(2)] + ["Final: 42"]
    pacore = create_pacore_graph(FakeListChatModel(responses=responses), rounds=2).compile()
    parent = StateGraph(RagState)
    parent.add_node("reason", pacore)
    parent.add_edge(START, "reason")
    parent.add_edge("reason", END)
    out = parent.compile().invoke(
        {"messages": [("user", "Q?")], "references": ["doc A", "doc B"], "round": 7}
    )
    assert out["references"] == ["doc A", "doc B"]
    assert out["round"] == 7
    assert [m.content for m in out["messages"]] == ["Q?", "Final: 42"]


class RecordingState(MessagesState):
    pacore: dict


def test_a_parent_that_declares_pacore_receives_the_record():
    responses = ["a", "b", "Final"]
    pacore = create_pacore_graph(FakeListChatModel(responses=responses), rounds=2).compile()
    parent = StateGraph(RecordingState)
    parent.add_node("reason", pacore)
    parent.add_edge(START, "reason")
    out = parent.compile().invoke({"messages": [("user", "Q?")]})
    assert out["pacore"]["round_vector"] == [2, 1]
    assert [t["content"] for t in out["pacore"]["trajectories"]] == ["a", "b", "Final"]


def test_standalone_output_is_the_chat_and_the_runs_record():
    responses = ["<think>w</think>x", "y", "Final"]
    graph = create_pacore_graph(FakeListChatModel(responses=responses), rounds=2).compile()
    out = graph.invoke({"messages": [("user", "Q?")]})
    assert set(out) == {"messages", "pacore"}
    run = out["pacore"]
    assert [(t["round"], t["index"]) for t in run["trajectories"]] == [(1, 0), (1, 1), (2, 0)]
    assert run["rounds_done"][0]["references"] and run["settings"]["rounds"] == [2, 1]
    assert to_record(out)["answer"] == to_record(run)["answer"] == "Final"
    assert graph.name == "pacore"


def test_the_record_is_output_only_and_the_thread_keeps_the_trajectories_once():
    graph = create_pacore_graph(FakeListChatModel(responses=["a", "b", "F"]), rounds=2).compile(
        checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "r"}}
    out = graph.invoke({"messages": [("user", "Q?")]}, config)
    stored = graph.get_state(config).values
    assert "pacore" not in stored  # not a second copy of every trajectory in Redis
    assert to_record(stored)["trajectories"] == to_record(out)["trajectories"]
