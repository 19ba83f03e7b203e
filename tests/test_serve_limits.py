"""The server's bounds on a run (``--max-k``, ``--max-input-chars``, ``--max-trajectories``,
and the budgets ``--max-ttc-tokens``, ``--max-seconds`` when set): a request's ``pacore``
object may lower them, never raise them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pacore_graph.testing import ScriptedServer
from tests.serve_helpers import ANSWER, Served, question, respond, serving


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedServer]:
    with ScriptedServer(respond) as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: ScriptedServer) -> Iterator[Served]:
    bounds = {"max_k": 16, "max_input_chars": 5000, "max_ttc_tokens": 10_000}
    with serving(upstream, graph_defaults=bounds) as s:
        yield s


@pytest.mark.parametrize(
    ("model", "text", "pacore", "name", "limit"),
    [
        ("pacore-20", "What is 2+2?", {"max_k": 100_000}, "max_k", "16"),
        ("pacore-2", "x" * 8000, {"max_input_chars": 1e9}, "max_input_chars", "5000"),
        ("pacore-2", "What is 2+2?", {"max_trajectories": 5000}, "max_trajectories", "4096"),
        ("pacore-2", "What is 2+2?", {"max_ttc_tokens": 10**9}, "max_ttc_tokens", "10000"),
    ],
    ids=["max_k", "max_input_chars", "max_trajectories", "max_ttc_tokens"],
)
def test_a_request_cannot_raise_a_bound_of_the_server(
    served, upstream, model, text, pacore, name, limit
):
    calls = len(upstream.requests)
    response = served.post({"model": model, "messages": question(text), "pacore": pacore})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_pacore_settings", f"pacore.{name}")
    assert f"pacore.{name}" in error["message"] and limit in error["message"]
    assert len(upstream.requests) == calls  # refused before any call


def test_the_server_bounds_hold_without_a_request_setting(served, upstream):
    wide = served.post({"model": "pacore-20", "messages": question()})
    assert wide.status_code == 400 and "above max_k = 16" in wide.json()["error"]["message"]
    long = served.post({"model": "pacore-2", "messages": question("x" * 8000)})
    assert long.status_code == 400 and "max_input_chars = 5,000" in long.json()["error"]["message"]


def test_a_request_may_lower_a_bound(served):
    lowered = served.post(
        {"model": "pacore-8", "messages": question(), "pacore": {"max_k": 4}}
    ).json()
    assert "above max_k = 4" in lowered["error"]["message"]
    within = {"max_k": 16, "max_input_chars": 100, "max_ttc_tokens": 5000}
    reply = served.post({"model": "pacore-2", "messages": question(), "pacore": within})
    assert reply.json()["choices"][0]["message"]["content"] == ANSWER


def test_a_budget_the_server_does_not_set_is_the_request_s(upstream):
    with serving(upstream) as served:
        body = {"model": "pacore-1", "messages": question(), "pacore": {"max_seconds": 1e6}}
        reply = served.post(body)
    assert reply.json()["choices"][0]["message"]["content"] == ANSWER
