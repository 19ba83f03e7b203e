"""What a run stores: each round's prompt and references once, however many trajectories
read them and however many rounds follow."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver

from pacore_graph import create_pacore_graph

MARK = b"UNIQUE-CONCLUSION-"


def copies_stored(rounds: list[int]) -> int:
    """How many times the first round's first conclusion is in the checkpointer."""
    k1 = rounds[0]
    replies = [f"<think>t{i}</think>{MARK.decode()}{i:03d}" for i in range(k1)]
    replies += [f"<think>later</think>later {i}" for i in range(sum(rounds[1:]))]
    saver = InMemorySaver()
    graph = create_pacore_graph(
        FakeListChatModel(responses=replies), rounds=rounds, temperature=0.0
    ).compile(checkpointer=saver)
    out = graph.invoke({"messages": [("user", "Q?")]}, {"configurable": {"thread_id": "t"}})
    assert out["pacore"]["rounds_done"][0]["references"]  # round 1 left references
    stored = b"".join(_bytes_in((saver.storage, saver.writes, saver.blobs)))
    return stored.count(MARK + b"000")


def _bytes_in(value: Any) -> list[bytes]:
    """Every serialized value in InMemorySaver's nested dicts and tuples."""
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, dict):
        return [b for v in value.values() for b in _bytes_in(v)]
    if isinstance(value, tuple | list):
        return [b for v in value for b in _bytes_in(v)]
    return []


def test_a_rounds_prompt_is_stored_once_not_once_per_trajectory():
    # Round 2's prompt quotes every conclusion of round 1: its 8 trajectories read it from
    # the state; a prompt inside each Send stored it 8 times.
    assert copies_stored([2, 8, 1]) == copies_stored([2, 1, 1])


def test_later_rounds_do_not_store_earlier_references_again():
    # rounds_done keeps every round's references: a checkpoint that rewrote the whole
    # list stored round 1's again after every later round.
    assert copies_stored([2, 1, 1, 1, 1]) == copies_stored([2, 1, 1])


def test_one_task_of_a_round_leads_on_to_compact():
    # LangGraph rescans a step's pending writes for each finished task: a write per
    # trajectory to compact's edge made a round of K cost O(K^2) twice over, and stored
    # K edge writes where one does.
    saver = InMemorySaver()
    model = FakeListChatModel(responses=[f"<think>t</think>answer {i}" for i in range(9)])
    graph = create_pacore_graph(model, rounds=[6, 2]).compile(checkpointer=saver)
    out = graph.invoke({"messages": [("user", "Q?")]}, {"configurable": {"thread_id": "t"}})
    assert len(out["pacore"]["trajectories"]) == 9
    channels = [w[1] for writes in saver.writes.values() for w in writes.values()]
    assert channels.count("trajectories") == 1 + 9  # prepare's reset, then each trajectory
    assert channels.count("branch:to:compact") == 3  # one per round
