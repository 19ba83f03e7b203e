"""Where PaCoRe reads the problem in a chat and where the synthesis prompt goes."""

from __future__ import annotations

import collections
import weakref
from collections.abc import Sequence

from langchain_core.messages import BaseMessage, HumanMessage

from pacore_graph.errors import InvalidInputError
from pacore_graph.template import render_synthesis_prompt


def last_user_index(messages: Sequence[BaseMessage]) -> int:
    """Index of the last user message; InvalidInputError when there is none or it is empty."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            if not message_text(messages[i]).strip():
                raise InvalidInputError("the last user message is empty: PaCoRe needs a problem")
            return i
    raise InvalidInputError("no user message in the input: PaCoRe needs a problem to solve")


def message_text(message: BaseMessage) -> str:
    """The message's content as text (content blocks joined by their text)."""
    return message.content if isinstance(message.content, str) else message.text


def build_round_messages(
    messages: Sequence[BaseMessage], references: Sequence[str] | None
) -> list[BaseMessage]:
    """The messages a round sends, as a new list: the last user message's text replaced by
    ``P(x, M)`` unless ``references`` is None; its images and other blocks stay in place."""
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
    """A built prompt that a weak reference can point to, with what it was built from."""

    __slots__ = ("__weakref__", "source")
    source: tuple[object, object]


class RoundPrompts:
    """Each round's prompt built once for its K tasks, keyed by the identity of the state's
    ``messages`` and ``references``; held while sent and among the last ``keep`` built."""

    def __init__(self, keep: int = 16) -> None:
        self._built: weakref.WeakValueDictionary[tuple[int, int], _Prompt] = (
            weakref.WeakValueDictionary()
        )
        self._recent: collections.deque[_Prompt] = collections.deque(maxlen=keep)

    def get(
        self, messages: Sequence[BaseMessage], references: Sequence[str] | None
    ) -> list[BaseMessage]:
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
        return len(self._built)
