from pathlib import Path

import jinja2
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from pacore_graph import SYNTHESIS_TEMPLATE, build_round_messages, render_synthesis_prompt
from pacore_graph.errors import InvalidInputError

# The reference's template, copied verbatim (one physical line per template line).
REFERENCE_TEMPLATE = (
    "You are given a problem and a list of reference responses. Your job is to analyze these "
    "references and provide your own response.\n"
    "\n"
    "Original Problem:\n"
    "{{ original_prompt }}\n"
    "\n"
    "Reference Responses:\n"
    "{% for response in ref_responses %}\n"
    "Reference {{ loop.index }}:\n"
    "{{ response }}\n"
    "{% endfor %}\n"
    "\n"
    "Now, based on the original problem and reference responses above, please provide your "
    "own comprehensive solution.\n"
)


def reference_render(x, refs):
    return jinja2.Template(REFERENCE_TEMPLATE).render(original_prompt=x, ref_responses=refs)


def test_template_text_is_verbatim():
    assert SYNTHESIS_TEMPLATE == REFERENCE_TEMPLATE
    doc = Path(__file__).resolve().parents[2] / "shared" / "reference" / "pacore.md"
    if doc.exists():  # the spec itself, where the checkout has it beside
        text = doc.read_text().split("-----BEGIN TEMPLATE-----\n")[1]
        assert text.split("-----END TEMPLATE-----")[0] == SYNTHESIS_TEMPLATE


@pytest.mark.parametrize(
    "refs",
    [[], ["42"], ["first {{ not jinja }}", "second\n\nwith blank lines", "\\boxed{3}"]],
)
def test_render_is_byte_identical_to_reference(refs):
    x = "Find all n such that n^2 + 1 is prime.\nUse {braces} and 100% care."
    rendered = render_synthesis_prompt(x, refs)
    assert rendered == reference_render(x, refs)
    assert rendered.endswith("comprehensive solution.")
    for i, ref in enumerate(refs, 1):
        assert f"\nReference {i}:\n{ref}\n" in rendered


def test_round_one_sends_the_callers_messages_unchanged():
    msgs = [SystemMessage("be brief"), HumanMessage("2+2?")]
    out = build_round_messages(msgs, None)
    assert out == msgs
    assert all(a is b for a, b in zip(out, msgs, strict=True))


def test_later_rounds_replace_only_the_last_user_message():
    msgs = [
        SystemMessage("sys"),
        HumanMessage("earlier question"),
        AIMessage("earlier answer"),
        HumanMessage("the problem"),
        AIMessage("trailing assistant note"),
    ]
    before = [m.model_copy() for m in msgs]
    out = build_round_messages(msgs, ["a", "b"])
    assert out[3].content == reference_render("the problem", ["a", "b"])
    assert out[:3] == msgs[:3] and out[4] == msgs[4]
    assert msgs == before  # caller's list and messages untouched


def test_no_user_message_or_empty_problem_is_an_error():
    with pytest.raises(InvalidInputError, match="no user message"):
        build_round_messages([SystemMessage("sys")], ["a"])
    with pytest.raises(InvalidInputError, match="empty"):
        build_round_messages([HumanMessage("  ")], ["a"])


def test_a_rounds_prompt_is_built_once_for_its_trajectories(monkeypatch):
    from langchain_core.language_models import FakeListChatModel

    from pacore_graph import create_pacore_graph, messages

    built: list[object] = []
    build = messages.build_round_messages

    def counting(chat, references):
        built.append(references)
        return build(chat, references)

    monkeypatch.setattr(messages, "build_round_messages", counting)
    model = FakeListChatModel(responses=["a", "b", "c", "d", "e"] * 3)
    create_pacore_graph(model, rounds=[6, 3]).compile().invoke({"messages": [("user", "Q?")]})
    assert len(built) == 3  # one build per round, not one per trajectory


def test_round_prompts_keep_only_the_last_few_built():
    import gc

    from langchain_core.messages import HumanMessage

    from pacore_graph.messages import RoundPrompts

    prompts = RoundPrompts(keep=2)
    chat = [HumanMessage("Q?")]
    refs = [[f"r{i}"] for i in range(5)]
    first = prompts.get(chat, refs[0])
    assert prompts.get(chat, refs[0]) is first
    for r in refs[1:]:
        prompts.get(chat, r)
    gc.collect()
    assert len(prompts) == 3  # the 2 kept, and the one a caller still holds
    del first
    gc.collect()
    assert len(prompts) == 2
