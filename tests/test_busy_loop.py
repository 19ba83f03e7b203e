"""Calls that start while the event loop is busy (thousands starting at once, issue 25) are
no connect timeouts: at 256 problems x 32 the loop lagged past the 5 s connect limit, and
every problem failed its quorum with "timed out"."""

import asyncio
import time

import pytest

from pacore_graph.backends import openai_compat
from pacore_graph.backends.clients import KERNEL_CONNECT_LIMIT
from pacore_graph.testing import Reply
from tests.conftest import model_for


@pytest.mark.skipif(not KERNEL_CONNECT_LIMIT, reason="the kernel's connect limit is Linux's")
def test_a_busy_loop_is_no_connect_timeout(scripted, monkeypatch):
    monkeypatch.setattr(openai_compat, "CONNECT_S", 0.2)  # what a loop timer would allow
    model = model_for(scripted(lambda body: Reply(content="391")))

    async def run() -> list:
        busy = asyncio.Event()

        def hold(left: int) -> None:  # each loop iteration takes 0.3 s: past the limit
            time.sleep(0.3)
            if left:
                asyncio.get_running_loop().call_soon(hold, left - 1)
            else:
                busy.set()

        asyncio.get_running_loop().call_soon(hold, 8)
        replies = await asyncio.gather(*(model.ainvoke("17 * 23?") for _ in range(4)))
        await busy.wait()
        return replies

    assert [r.content for r in asyncio.run(run())] == ["391"] * 4
