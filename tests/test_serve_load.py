"""Many requests at once: all answered under one bound on upstream calls, and 429 with
Retry-After only past ``max_runs``. Replies are held (`Gate`) until the bound is reached,
so the counts do not depend on timing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import httpx
import openai
import pytest

from pacore_graph.testing import ScriptedServer
from tests.conftest import Gate, wait_for
from tests.serve_helpers import ANSWER, question, respond, serving

REQUESTS = 50


async def test_fifty_concurrent_requests_are_all_answered_under_one_upstream_bound():
    bound = 16
    gate = Gate(respond)
    with (
        ScriptedServer(gate) as upstream,
        serving(
            upstream, max_runs=REQUESTS, model_kwargs={"max_concurrent_requests": bound}
        ) as served,
    ):
        gate.open_when(lambda: upstream.in_flight >= bound)  # the bound is reached, then held
        client = served.async_client(max_retries=0, timeout=120)
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(model="pacore-2", messages=question(f"{i}: 2+2?"))
                for i in range(REQUESTS)
            )
        )
        await client.close()
        assert [r.choices[0].message.content for r in replies] == [ANSWER] * REQUESTS
        assert len(upstream.requests) == REQUESTS * 3
        # One bound over all 50 runs, not one per run (50 runs x 2 calls would be 100).
        assert upstream.max_in_flight == bound
        assert served.service is not None and served.service.runs.executing() == 0


async def test_past_max_runs_requests_get_429_with_retry_after():
    max_runs = 10
    gate = Gate(respond)
    with ScriptedServer(gate) as upstream, serving(upstream, max_runs=max_runs) as served:
        assert served.service is not None
        service = served.service
        rejected: list[httpx.Response] = []
        gate.open_when(
            lambda: service.runs.executing() == max_runs and len(rejected) == REQUESTS - max_runs
        )

        async def ask(client: httpx.AsyncClient, i: int) -> httpx.Response:
            body = {"model": "pacore-2", "messages": question(f"{i}: 2+2?")}
            response = await client.post(f"{served.base_url}/chat/completions", json=body)
            if response.status_code == 429:
                rejected.append(response)
            return response

        async with httpx.AsyncClient(timeout=120) as client:
            responses = await asyncio.gather(*(ask(client, i) for i in range(REQUESTS)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) == max_runs and codes.count(429) == REQUESTS - max_runs
        for response in rejected:
            assert response.headers["Retry-After"] == "5"
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
            assert "--max-runs 10" in error["message"]
        answered = [
            r.json()["choices"][0]["message"]["content"] for r in responses if r.status_code == 200
        ]
        assert answered == [ANSWER] * max_runs
        assert len(upstream.requests) == max_runs * 3  # a rejected request asked nothing

        # Free again: the next request runs.
        reply = served.client().chat.completions.create(model="pacore-1", messages=question())
        assert reply.choices[0].message.content == ANSWER
        metrics = httpx.get(f"{served.url}/metrics").text
        assert f'pacore_requests_total{{code="429"}} {float(REQUESTS - max_runs)}' in metrics


def test_the_sdk_sees_a_full_server_as_rate_limited():
    refused = threading.Event()
    gate = Gate(respond)
    gate.open_when(refused.is_set)
    with ScriptedServer(gate) as upstream, serving(upstream, max_runs=1) as served:
        first = concurrent.futures.ThreadPoolExecutor(1).submit(
            served.client().chat.completions.create, model="pacore-1", messages=question()
        )
        assert served.service is not None
        wait_for(lambda: served.service.runs.executing() == 1)
        with pytest.raises(openai.RateLimitError, match="max-runs 1"):
            served.client(max_retries=0).chat.completions.create(
                model="pacore-1", messages=question()
            )
        refused.set()
        assert first.result(timeout=60).choices[0].message.content == ANSWER
