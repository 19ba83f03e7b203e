"""The thread runner: a thread resumes only the run it holds, never another question's."""

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph import QuorumError, ThreadConflictError, arun_thread, create_pacore_graph
from pacore_graph.testing import Reply, last_user_text
from pacore_graph.threads import default_thread_id
from tests.conftest import model_for


def failing_first_question(body):
    if "first question" in last_user_text(body):
        return Reply(status=400, error="context length exceeded")
    return Reply(content="<think>easy</think>\\boxed{2}")


async def test_a_new_question_on_an_unfinished_thread_is_a_conflict_not_the_old_answer(
    scripted,
):
    server = scripted(failing_first_question)
    graph = create_pacore_graph(model_for(server), rounds=[2]).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t3"}}
    with pytest.raises(QuorumError):  # the run stops half way; the thread keeps it
        await arun_thread(graph, {"messages": [("user", "first question")]}, config)
    asked = len(server.requests)

    with pytest.raises(ThreadConflictError, match="thread t3 holds an unfinished run"):
        await arun_thread(graph, {"messages": [HumanMessage("second question")]}, config)
    assert len(server.requests) == asked  # nothing was asked for either question

    # The same question resumes its run (asking the failed calls again).
    with pytest.raises(QuorumError):
        await arun_thread(graph, {"messages": [("user", "first question")]}, config)
    assert len(server.requests) == asked + 2


async def test_a_finished_thread_answers_from_the_checkpoint_without_a_call(scripted):
    server = scripted(failing_first_question)
    graph = create_pacore_graph(model_for(server), rounds=[2]).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t4"}}
    seen = []
    status, state = await arun_thread(
        graph, {"messages": [("user", "1+1?")]}, config, on_status=seen.append
    )
    asked = len(server.requests)
    again, stored = await arun_thread(
        graph, {"messages": [("user", "1+1?")]}, config, on_status=seen.append
    )
    assert seen == ["new", "finished"] and (status, again) == ("new", "finished")
    assert stored["messages"][-1].content == state["messages"][-1].content == "\\boxed{2}"
    assert len(server.requests) == asked == 3


async def test_resume_under_other_settings_is_a_conflict_naming_them(scripted):
    server = scripted(failing_first_question)
    graph = create_pacore_graph(model_for(server), rounds=[2]).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t5"}}
    question = {"messages": [("user", "first question")]}
    with pytest.raises(QuorumError):
        await arun_thread(graph, question, config, context={"temperature": 0.6})
    asked = len(server.requests)

    with pytest.raises(ThreadConflictError, match=r"temperature 0\.6 -> 1\.0"):
        await arun_thread(graph, question, config)
    # Resuming straight through the graph is held to the same rule, before any call.
    with pytest.raises(ThreadConflictError, match="other settings"):
        await graph.ainvoke(None, config, context={"temperature": 0.2})
    assert len(server.requests) == asked
    # The same settings resume it ("32,4" and [32, 4] name the same rounds).
    with pytest.raises(QuorumError):
        await arun_thread(graph, question, config, context={"temperature": 0.6, "rounds": "2"})
    assert len(server.requests) == asked + 2


async def test_an_answer_under_other_settings_is_not_handed_back(scripted):
    server = scripted(failing_first_question)
    graph = create_pacore_graph(model_for(server), rounds=[2]).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t6"}}
    question = {"messages": [("user", "1+1?")]}
    await arun_thread(graph, question, config)
    status, _ = await arun_thread(graph, question, config, context={"rounds": [3]})
    assert status == "new"
    assert len(server.requests) == 3 + 4  # the question was run again, with K = 3
    again, _ = await arun_thread(graph, question, config, context={"rounds": "3"})
    assert again == "finished" and len(server.requests) == 7


def test_default_thread_id_follows_every_setting():
    chat = [HumanMessage("x")]
    assert default_thread_id(chat, {"rounds": "low"}) == default_thread_id(chat, {"rounds": "low"})
    assert default_thread_id(chat, {"rounds": "low"}) != default_thread_id(
        chat, {"rounds": "low", "temperature": 0.6}
    )
