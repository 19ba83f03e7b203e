"""Bad requests and failed runs are OpenAI error objects with the right status, in one
line, without secrets, and the server stays up."""

from __future__ import annotations

import json
import subprocess
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from pacore_graph.server import ApiKeys
from pacore_graph.testing import Reply, ScriptedServer, last_user_text
from tests.serve_helpers import (
    ANSWER,
    ROOT,
    UPSTREAM_KEY,
    Served,
    question,
    respond,
    serve_command,
    serving,
)
from tests.servers import free_port

KEY = "sk-pacore-client-0123456789"
LIMIT = 64 * 1024


def failing(body: dict[str, Any]) -> Reply:
    text = last_user_text(body)
    if "FAIL-ALL" in text:
        # A server that echoes the key in its error: it must not reach the client.
        return Reply(status=400, error=f"context length exceeded (key {UPSTREAM_KEY})")
    if "FAIL-FINAL" in text and "Reference 1:" in text:
        return Reply(status=400, error="the final call is refused")
    if "SLOW" in text:
        return Reply(content="late", delay=30)
    return respond(body)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedServer]:
    with ScriptedServer(failing) as server:
        yield server


@pytest.fixture(scope="module")
def served(upstream: ScriptedServer) -> Iterator[Served]:
    with serving(
        upstream,
        api_keys=ApiKeys.parse(f"{KEY}, another-key-42"),
        max_body_bytes=LIMIT,
        max_trajectories=64,
        keepalive_s=5,
    ) as s:
        yield s


def post(served: Served, body: Any, key: str | None = KEY, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return served.post(body, headers)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "code"} <= set(error)
    assert "\n" not in error["message"]
    return error


def good(model: str = "pacore-1", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": question(), **extra}


@pytest.mark.parametrize(
    ("key", "message"),
    [(None, "missing API key"), ("sk-wrong-key-000", "incorrect API key")],
    ids=["missing", "wrong"],
)
def test_a_missing_or_wrong_key_is_401(served, key, message):
    response = post(served, good(), key=key)
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == "invalid_api_key" and message in error["message"]
    if key is not None:
        with pytest.raises(openai.AuthenticationError):
            served.client(api_key=key).models.list()


def test_every_configured_key_is_accepted(served):
    for key in (KEY, "another-key-42"):
        reply = served.client(api_key=key).chat.completions.create(
            model="pacore-1", messages=question()
        )
        assert reply.choices[0].message.content == ANSWER


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b'{"model": "pacore-1", "messages": [', 400, "invalid_json", "parse the JSON body"),
        (b"[1, 2]", 400, "invalid_request", "should be an object"),
        (good("pacore-8b"), 404, "model_not_found", "The model 'pacore-8b' does not exist"),
        (good("pacore-0"), 404, "model_not_found", "K >= 1"),
        (good("gpt-4o"), 404, "model_not_found", "pacore-32x4"),
        (good("pacore-64x2"), 400, "too_many_trajectories", "at most 64"),
        (
            good(pacore={"temprature": 0.5}),
            400,
            "invalid_pacore_settings",
            "temprature; did you mean temperature?",
        ),
        (good(pacore={"review": True}), 400, "invalid_pacore_settings", "cannot pause"),
        (good(pacore={"min_success": 2.5}), 400, "invalid_pacore_settings", "min_success"),
        (good(pacore={"max_seconds": "soon"}), 400, "invalid_pacore_settings", "max_seconds"),
        (
            good(pacore={"straggler_quantile": 1.5}),
            400,
            "invalid_pacore_settings",
            "straggler_quantile must be a number in (0, 1]",
        ),
        (good(pacore={"rounds": "high"}), 400, "invalid_pacore_settings", "model name"),
        (good(pacore={"temperature": 0.2}), 400, "invalid_pacore_settings", "top level"),
        (good(pacore={"progress": "yes"}), 400, None, "progress"),
        (good(temperature=7), 400, "invalid_request", "temperature"),
        (good(n=99), 400, None, "n is at most"),
        (good(seed=7), 400, "unsupported_parameter", "seed"),
        (
            good(tools=[{"type": "function", "function": {"name": "f"}}]),
            400,
            "unsupported_parameter",
            "tools",
        ),
        (good(response_format={"type": "json_object"}), 400, "unsupported_parameter", "format"),
        ({"model": "pacore-1", "messages": []}, 400, "invalid_request", "messages"),
        (
            {"model": "pacore-1", "messages": [{"role": "assistant", "content": "hi"}]},
            400,
            "invalid_messages",
            "no user message",
        ),
        (
            {"model": "pacore-1", "messages": [{"role": "wizard", "content": "hi"}]},
            400,
            "invalid_messages",
            "wizard",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_requests_are_4xx_openai_errors(served, body, status, code, message):
    response = post(served, body)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code
    assert message in error["message"]


def test_harmless_defaults_of_unsupported_fields_pass(served):
    response = post(
        served,
        good(
            tools=[],
            tool_choice="none",
            logprobs=False,
            response_format={"type": "text"},
            user="u-1",
            metadata={"a": "b"},
        ),
    )
    assert response.status_code == 200, response.text


def test_a_body_over_the_limit_is_413(served):
    big = good(messages=[{"role": "user", "content": "x" * (LIMIT + 1)}])
    response = post(served, big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    # Without a Content-Length (chunked), counted as it arrives.
    raw = json.dumps(big).encode()
    chunked = httpx.post(
        f"{served.base_url}/chat/completions",
        content=iter([raw[:1000], raw[1000:]]),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413


def test_a_bad_idempotency_key_is_400(served):
    response = post(served, good(), **{"Idempotency-Key": "x" * 300})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_idempotency_key"


def test_unknown_routes_and_methods_are_openai_errors(served):
    response = httpx.get(f"{served.base_url}/completions")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    response = httpx.get(f"{served.base_url}/chat/completions")
    assert response.status_code == 405 and error_of(response)


def test_an_upstream_failure_is_502_naming_the_cause_without_the_key(served):
    response = post(served, good("pacore-2", messages=question("FAIL-ALL 2+2?")))
    assert response.status_code == 502
    error = error_of(response)
    assert (error["type"], error["code"]) == ("upstream_error", "quorum_not_reached")
    assert "round 1: 0 of 2 trajectories finished" in error["message"]
    assert "HTTP 400" in error["message"] and "context length exceeded" in error["message"]
    assert UPSTREAM_KEY not in response.text
    with pytest.raises(openai.InternalServerError, match="min_success"):
        served.client(api_key=KEY, max_retries=0).chat.completions.create(
            model="pacore-2", messages=question("FAIL-ALL again")
        )


def test_a_failure_after_the_stream_began_is_an_error_event(served):
    stream = served.client(api_key=KEY, max_retries=0).chat.completions.create(
        model="pacore-2", messages=question("FAIL-FINAL 2+2?"), stream=True
    )
    with pytest.raises(openai.APIError, match="round 2: 0 of 1 trajectories finished"):
        list(stream)


def test_a_budget_that_runs_out_before_anything_finished_is_422(served, upstream):
    response = post(
        served, good("pacore-2", messages=question("SLOW 2+2?"), pacore={"max_seconds": 0.3})
    )
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "budget_exhausted" and "max_seconds" in error["message"]


def test_the_server_stays_up_and_counts_what_it_answered(served):
    # Its own failures to count: the module's other tests may run on another worker.
    assert post(served, good(), key=None).status_code == 401
    too_big = good(messages=[{"role": "user", "content": "x" * (LIMIT + 1)}])
    assert post(served, too_big).status_code == 413
    assert post(served, good("pacore-2", messages=question("FAIL-ALL count"))).status_code == 502
    assert httpx.get(f"{served.url}/health").status_code == 200
    assert post(served, good()).json()["choices"][0]["message"]["content"] == ANSWER
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'pacore_requests_total{code="401"}' in metrics
    assert 'pacore_requests_total{code="413"}' in metrics
    assert 'pacore_requests_total{code="502"}' in metrics
    upstream_errors = next(
        line for line in metrics.splitlines() if line.startswith("pacore_upstream_errors_total")
    )
    assert float(upstream_errors.split()[-1]) >= 2


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--api-keys-file", "/nonexistent/keys.txt"], "No such file"),
        (["--redis-url", "redis://127.0.0.1:1/0"], "Redis at redis://127.0.0.1:1/0 is unreachable"),
    ],
    ids=["keys-file", "redis"],
)
def test_a_server_that_cannot_start_says_why_in_one_line(upstream, extra, problem):
    done = subprocess.run(
        [*serve_command(upstream, free_port()), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pacore: error: ") and problem in lines[0]
    assert UPSTREAM_KEY not in done.stderr


def test_the_server_extra_pins_what_the_tests_ran():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {requirement.split("==")[0] for requirement in extras["server"]}
    assert names == {"starlette", "sse-starlette", "uvicorn", "prometheus-client"}
    assert all("==" in requirement for requirement in extras["server"])
    [own] = [r for r in extras["test"] if r.startswith("pacore-graph[")]
    assert "server" in own.removeprefix("pacore-graph[").removesuffix("]").split(",")
