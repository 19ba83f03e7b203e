"""Where PaCoRe reads the problem in a chat and where the synthesis prompt goes."""

from __future__ import annotations

import collections
import weakref
from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage

from pacore_graph.errors import InvalidInputError
from pacore_graph.template import render_synthesis_prompt


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
    """The messages one trajectory of a round is sent, as a new list.

    Round 1 (``references is None``) sends the caller's messages unchanged. Later rounds
    replace the content of the LAST user message with ``P(x, M)``; other messages pass
    unchanged. When that message has content blocks (text and images), ``P(x, M)`` takes
    the place of the first text block, the other text blocks (already in x) go, and
    images and other blocks stay where they were, so every round sees them.
    """
    if references is None:
        return list(messages)
    idx = last_user_index(messages)
    original = messages[idx]
    prompt = render_synthesis_prompt(message_text(original), references)
    out = list(messages)
    out[idx] = original.model_copy(update={"content": _with_text(original.content, prompt)})
    return out


def _is_text(block: object) -> bool:
    return isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text")


def _with_text(content: str | list[str | dict], text: str) -> str | list[str | dict]:
    """``content`` with its text replaced by ``text``; non-text blocks kept in place."""
    if isinstance(content, str) or all(_is_text(b) for b in content):
        return text
    out: list[str | dict] = []
    for block in content:
        if not _is_text(block):
            out.append(block)
        elif not any(_is_text(b) for b in out):
            out.append({"type": "text", "text": text})
    return out


class _Prompt(list[BaseMessage]):
    """A built prompt: a list a weak reference can point to, with what it was built from."""

    __slots__ = ("__weakref__", "source")
    source: tuple[object, object]


class RoundPrompts:
    """Each round's prompt built once for its K trajectories: `build_round_messages` of the
    same ``messages`` and ``references`` objects (a round's tasks read the same state
    values) returns the list it built the first time.

    A prompt is held while a call sends it, and the last ``keep`` built are held besides
    (calls that return at once, as a fake model's, overlap with no other); a miss only
    builds the prompt again.
    """

    def __init__(self, keep: int = 16) -> None:
        self._built: weakref.WeakValueDictionary[tuple[int, int], _Prompt] = (
            weakref.WeakValueDictionary()
        )
        self._recent: collections.deque[_Prompt] = collections.deque(maxlen=keep)

    def get(
        self, messages: Sequence[BaseMessage], references: Sequence[str] | None
    ) -> list[BaseMessage]:
        """``build_round_messages(messages, references)``, built once per pair of objects."""
        key = (id(messages), id(references))
        hit = self._built.get(key)
        # The entry holds its sources, so their ids are not reused while it lives.
        if hit is not None and hit.source[0] is messages and hit.source[1] is references:
            return hit
        built = _Prompt(build_round_messages(messages, references))
        built.source = (messages, references)
        self._built[key] = built
        self._recent.append(built)
        return built

    def __len__(self) -> int:
        """How many prompts are held."""
        return len(self._built)
