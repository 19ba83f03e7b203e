"""The synthesis prompt P(x, M), verbatim from the reference, and where it goes in a chat."""

from __future__ import annotations

from collections.abc import Sequence

import jinja2
from langchain_core.messages import BaseMessage, HumanMessage

from pacore_graph.errors import InvalidInputError

SYNTHESIS_TEMPLATE = """\
You are given a problem and a list of reference responses. Your job is to analyze these \
references and provide your own response.

Original Problem:
{{ original_prompt }}

Reference Responses:
{% for response in ref_responses %}
Reference {{ loop.index }}:
{{ response }}
{% endfor %}

Now, based on the original problem and reference responses above, please provide your own \
comprehensive solution.
"""
"""The reference's template text, byte for byte (the backslashes only fold long lines)."""

# jinja2's defaults (keep_trailing_newline=False, no trim_blocks) are part of the
# reference's output: the prompt ends with "solution." and each reference is framed
# by the blank lines the for/endfor lines leave.
_TEMPLATE = jinja2.Template(SYNTHESIS_TEMPLATE)


def render_synthesis_prompt(original_prompt: str, references: Sequence[str]) -> str:
    """Renders P(x, M) exactly as the reference pipeline does.

    Args:
        original_prompt: x, the original content of the last user message.
        references: M, the compacted messages of the previous round, in order.

    Returns:
        The synthesis prompt text.
    """
    return _TEMPLATE.render(original_prompt=original_prompt, ref_responses=list(references))


def last_user_index(messages: Sequence[BaseMessage]) -> int:
    """Index of the last user message, the slot the synthesis prompt goes into.

    Raises:
        InvalidInputError: There is no user message, or it is empty.
    """
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            if not message_text(messages[i]).strip():
                raise InvalidInputError("the last user message is empty: PaCoRe needs a problem")
            return i
    raise InvalidInputError("no user message in the input: PaCoRe needs a problem to solve")


def message_text(message: BaseMessage) -> str:
    """The message's content as text: a string as is, content blocks joined by their text."""
    if isinstance(message.content, str):
        return message.content
    return message.text


def build_round_messages(
    messages: Sequence[BaseMessage], references: Sequence[str] | None
) -> list[BaseMessage]:
    """The messages one trajectory of a round is sent.

    Round 1 (``references is None``) sends the caller's messages unchanged. Later
    rounds copy them and replace the content of the LAST user message with
    ``P(x, M)``; system messages and earlier turns pass unchanged.

    Args:
        messages: The caller's conversation.
        references: M of the previous round, or None for the first round.

    Returns:
        A new list; the caller's messages are not modified.
    """
    if references is None:
        return list(messages)
    idx = last_user_index(messages)
    original = messages[idx]
    prompt = render_synthesis_prompt(message_text(original), references)
    out = list(messages)
    out[idx] = original.model_copy(update={"content": prompt})
    return out
