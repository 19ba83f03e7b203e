"""A user message with images keeps them in every round; only its text becomes P(x, M)."""

from langchain_core.messages import HumanMessage, SystemMessage

from pacore_graph import build_round_messages, create_pacore_graph, render_synthesis_prompt
from pacore_graph.testing import Reply
from tests.conftest import model_for

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_synthesis_replaces_only_the_text_of_the_last_user_message():
    question = HumanMessage(
        [{"type": "text", "text": "How many triangles"}, IMAGE, {"type": "text", "text": "?"}]
    )
    chat = [SystemMessage("Be careful."), question]
    (system, user) = build_round_messages(chat, ["7", "9"])
    assert system.content == "Be careful."
    prompt = render_synthesis_prompt("How many triangles?", ["7", "9"])
    assert user.content == [{"type": "text", "text": prompt}, IMAGE]
    assert question.content[1] == IMAGE and len(question.content) == 3  # caller's copy intact


def test_the_image_reaches_every_round_up_to_the_final_call(scripted):
    server = scripted(lambda body: Reply(content="<think>count</think>\\boxed{7}"))
    graph = create_pacore_graph(model_for(server), rounds="2,2").compile()
    question = HumanMessage([{"type": "text", "text": "How many triangles?"}, IMAGE])
    out = graph.invoke({"messages": [question]})
    assert out["messages"][-1].content == "\\boxed{7}"
    assert len(server.requests) == 2 + 2 + 1
    for body in server.requests:
        parts = body["messages"][-1]["content"]
        assert IMAGE in parts, parts
    final_text = [p["text"] for p in server.requests[-1]["messages"][-1]["content"] if "text" in p]
    assert final_text == [render_synthesis_prompt("How many triangles?", ["\\boxed{7}"] * 2)]
