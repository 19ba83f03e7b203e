"""The K calls of a round are byte-identical on the wire, so a vLLM prefix cache serves all
but the first: checked on the raw HTTP request bodies the scripted server receives."""

import asyncio
import json
import re
import threading

import pytest

from pacore_graph import create_pacore_graph
from pacore_graph import testing as scripted_module
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import model_for

SYSTEM = "You are a careful mathematician."
PROBLEM = "Find all positive integers n such that n^2 + 1 divides 2^n + 1."
ROUNDS = [4, 3]  # then the final round of 1


class RawBodies:
    """Stands in for the ``json`` module of pacore_graph.testing and keeps each request's
    raw bytes, which the server otherwise only keeps parsed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    def loads(self, raw, *args, **kwargs):
        with self.lock:
            self.bodies.append(bytes(raw))
        return json.loads(raw, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(json, name)


def raw_messages(body: bytes) -> bytes:
    """The bytes of the request's ``messages`` value, exactly as they were sent."""
    text = body.decode()
    match = re.search(r'"messages"\s*:\s*', text)
    assert match, body[:200]
    _, end = json.JSONDecoder().raw_decode(text, match.end())
    return text[match.end() : end].encode()


class Responder:
    """Every call gets a different reply; the conclusion (after </think>) is what later
    rounds see, the thinking must never reach them."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()
        self.conclusions: dict[str, list[str]] = {"1": [], "2": [], "final": []}

    def __call__(self, body):
        text = last_user_text(body)
        kind = "1" if text == PROBLEM else ("final" if "conclusion r2" in text else "2")
        with self.lock:
            self.n += 1
            n = self.n
            tag = {"1": "r1", "2": "r2", "final": "final"}[kind]
            conclusion = f"conclusion {tag}-{n}: n = {'1' * n} \\boxed{{{n}}}"
            self.conclusions[kind].append(conclusion)
        return Reply(content=f"<think>private thinking {n}</think>{conclusion}")


def rounds_of(bodies: list[bytes]) -> dict[str, list[bytes]]:
    by_round: dict[str, list[bytes]] = {"1": [], "2": [], "final": []}
    for body in bodies:
        text = last_user_text(json.loads(body))
        kind = "1" if text == PROBLEM else ("final" if "conclusion r2" in text else "2")
        by_round[kind].append(raw_messages(body))
    return by_round


def run_graph(server, mode: str) -> dict:
    model = model_for(server)
    graph = create_pacore_graph(model, rounds=ROUNDS).compile()
    inputs = {"messages": [("system", SYSTEM), ("user", PROBLEM)]}
    config = {"max_concurrency": 8}
    if mode == "invoke":
        return graph.invoke(inputs, config)
    return asyncio.run(graph.ainvoke(inputs, config))


@pytest.mark.parametrize("mode", ["ainvoke", "invoke"])
def test_the_k_calls_of_a_round_are_byte_identical(scripted, monkeypatch, mode):
    raw = RawBodies()
    monkeypatch.setattr(scripted_module, "json", raw)
    responder = Responder()
    server = scripted(responder)

    out = run_graph(server, mode)

    assert out["messages"][-1].content.startswith("conclusion final-")
    by_round = rounds_of(raw.bodies)
    assert [len(by_round[k]) for k in ("1", "2", "final")] == [*ROUNDS, 1]
    for kind in ("1", "2"):
        # One distinct byte string per round: the prefix cache serves K-1 of the K calls.
        assert len(set(by_round[kind])) == 1, f"round {kind} calls differ"

    round1 = json.loads(by_round["1"][0])
    round2 = json.loads(by_round["2"][0])
    final = json.loads(by_round["final"][0])
    # The system message is sent unchanged in every round: a prefix shared across rounds.
    for messages in (round1, round2, final):
        assert messages[0] == {"role": "system", "content": SYSTEM}
    assert round1[1] == {"role": "user", "content": PROBLEM}
    assert by_round["2"][0].startswith(by_round["1"][0][: by_round["1"][0].index(b"},") + 2])

    # Round 2 embeds every round-1 conclusion exactly once and none of the thinking.
    prompt = round2[1]["content"]
    assert prompt.startswith("You are given a problem and a list of reference responses.")
    assert PROBLEM in prompt
    assert sorted(responder.conclusions["1"]) == sorted(
        re.findall(r"conclusion r1-\d+: n = 1+ \\boxed\{\d+\}", prompt)
    )
    assert "private thinking" not in prompt
    assert len(re.findall(r"^Reference \d+:$", prompt, re.M)) == ROUNDS[0]
    # ... and the final call embeds the round-2 conclusions the same way.
    final_prompt = final[1]["content"]
    assert sorted(responder.conclusions["2"]) == sorted(
        re.findall(r"conclusion r2-\d+: n = 1+ \\boxed\{\d+\}", final_prompt)
    )
    assert "private thinking" not in final_prompt and "conclusion r1" not in final_prompt
