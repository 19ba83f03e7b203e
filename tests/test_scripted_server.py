"""The scripted server on its event loop: a coroutine responder holds hundreds of calls at
once without a thread each, as the benchmarks' simulated server does with thousands."""

import asyncio
import threading

import aiohttp

from pacore_graph.testing import Reply, ScriptedServer

CALLS = 400


async def test_a_coroutine_responder_holds_every_call_at_once_on_the_servers_loop():
    opened: list[asyncio.Event] = []  # made on the server's loop, by its first call

    async def respond(body: dict) -> Reply:
        if not opened:
            opened.append(asyncio.Event())
        if server.in_flight == CALLS:
            opened[0].set()
        await opened[0].wait()
        return Reply(content=f"answer {body['messages'][0]['content']}")

    with ScriptedServer(respond) as server:
        threads = threading.active_count()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def ask(i: int) -> str:
                body = {"model": server.model, "messages": [{"role": "user", "content": str(i)}]}
                async with session.post(f"{server.base_url}/chat/completions", json=body) as r:
                    return (await r.json())["choices"][0]["message"]["content"]

            answers = await asyncio.gather(*(ask(i) for i in range(CALLS)))
            assert threading.active_count() <= threads  # no thread per held call
    assert answers == [f"answer {i}" for i in range(CALLS)]
    assert server.max_in_flight == CALLS and len(server.requests) == CALLS
