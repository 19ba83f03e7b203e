"""The thread runner: a thread resumes only the run it holds, never another question's."""

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph import QuorumError, ThreadConflictError, arun_thread, create_pacore_graph
from pacore_graph.testing import Reply, last_user_text
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
