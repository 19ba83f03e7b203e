"""The scripted server on its event loop: a coroutine responder holds hundreds of calls at
once without a thread each, as the benchmarks' simulated server does with thousands."""

import asyncio
import contextlib
import threading

import aiohttp
import httpx

from pacore_graph.testing import Reply, ScriptedServer
from tests.conftest import wait_for

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


def test_stop_drops_a_pending_answer_and_ends_its_thread():
    # A sync client abandons its call (a stopped trajectory): the connection stays open.
    server = ScriptedServer(lambda body: Reply(content="late", delay=60)).start()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    url = f"{server.base_url}/chat/completions"
    caller = threading.Thread(target=_post_ignoring_errors, args=(url, body), daemon=True)
    caller.start()
    wait_for(lambda: server.in_flight == 1)
    server.stop()
    assert not server._thread.is_alive(), "stop waited on the pending answer"


def _post_ignoring_errors(url: str, body: dict) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json=body, timeout=120)
