"""The comparison point: PaCoRe run the way the official reference pipeline runs it.

A plain asyncio script shaped like ``pacore/batch_inference/base_exp.py``: one
``asyncio.Semaphore`` over every problem and round, each round an
``asyncio.gather`` of its K calls (the round barrier), each call a fresh
``aiohttp.ClientSession`` (a new HTTP connection per call), 5 attempts on 5xx.
It renders the same synthesis prompt with the same reference order as the graph
(the project's own template and ordering functions), so both send byte-identical
prompts and the simulated server draws the same latencies for both.

No checkpointing, no retries beyond 5xx, no records: the floor of what an
orchestrator can cost.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import aiohttp

from pacore_graph.compaction import order_references, reference_compaction
from pacore_graph.template import render_synthesis_prompt

SAMPLING = {"temperature": 1.0, "top_p": 1.0}


async def chat(
    url: str, model: str, messages: list[dict[str, Any]], sem: asyncio.Semaphore
) -> dict[str, Any]:
    """One call under the shared semaphore, on its own session (connection)."""
    payload = {"model": model, "messages": messages, **SAMPLING}
    async with sem:
        for attempt in range(5):
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
                session.post(url, json=payload, headers={"Authorization": "Bearer sim"}) as resp,
            ):
                if resp.status >= 500 and attempt < 4:
                    continue
                resp.raise_for_status()
                data = await resp.json()
                return data["choices"][0]["message"]
    raise RuntimeError("unreachable")


def round_messages(messages: list[dict[str, Any]], references: list[str] | None) -> list[dict]:
    """Round 1: the messages unchanged; later: the last user message becomes P(x, M)."""
    if references is None:
        return messages
    out = copy.deepcopy(messages)
    idx = max(i for i, m in enumerate(out) if m["role"] == "user")
    out[idx]["content"] = render_synthesis_prompt(messages[idx]["content"], references)
    return out


async def solve(
    url: str, model: str, messages: list[dict[str, Any]], rounds: list[int], sem: asyncio.Semaphore
) -> dict[str, Any]:
    """All rounds of one problem; the final K = 1 round is appended."""
    references: list[str] | None = None
    round_responses = []
    for k in [*rounds, 1]:
        prompt = round_messages(messages, references)
        responses = await asyncio.gather(*(chat(url, model, prompt, sem) for _ in range(k)))
        round_responses.append(responses)
        kept = [r["content"] for r in responses if r.get("content")]
        ordered = order_references(kept, lambda c: c, 42)
        references = [m for m in map(reference_compaction, ordered) if m]
    final = round_responses[-1][0]
    return {
        "final_response": reference_compaction(final["content"]),
        "round_responses": round_responses,
    }


async def run_all(
    base_url: str, model: str, problems: list[str], rounds: list[int], concurrency: int
) -> list[dict[str, Any]]:
    """Every problem at once under one semaphore, as the reference's main loop does."""
    sem = asyncio.Semaphore(concurrency)
    url = base_url.rstrip("/") + "/chat/completions"
    return await asyncio.gather(
        *(solve(url, model, [{"role": "user", "content": p}], rounds, sem) for p in problems)
    )
