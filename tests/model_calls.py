"""One model call made each way a chat model is called, for tests that must hold on every
path: sync and async, streamed and not, the SDK and the direct aiohttp path."""

import asyncio
from functools import reduce
from typing import Any

import pytest

from pacore_graph import ChatOpenAICompatible
from pacore_graph.testing import ScriptedServer
from tests.conftest import model_for

NOT_STREAMED = ("invoke", "ainvoke-direct", "ainvoke-sdk")
"""``invoke`` (the SDK's sync client), ``ainvoke`` directly on aiohttp and through the SDK."""
STREAMED = ("stream", "astream")
WAYS = NOT_STREAMED + STREAMED

not_streamed = pytest.mark.parametrize("way", NOT_STREAMED)
streamed = pytest.mark.parametrize("way", STREAMED)
every_way = pytest.mark.parametrize("way", WAYS)


def model_of(server: ScriptedServer, way: str, **kwargs: Any) -> ChatOpenAICompatible:
    """The model a call ``way`` needs (the SDK path is ``direct_http=False``)."""
    return model_for(server, direct_http=way != "ainvoke-sdk", **kwargs)


def call(model: ChatOpenAICompatible, way: str, prompt: str = "2+2?") -> Any:
    """The reply to ``prompt`` called ``way``; a stream's chunks added up."""
    if way == "invoke":
        return model.invoke(prompt)
    if way == "stream":
        return reduce(lambda a, b: a + b, model.stream(prompt))
    if way == "astream":

        async def collect() -> list[Any]:
            return [chunk async for chunk in model.astream(prompt)]

        return reduce(lambda a, b: a + b, asyncio.run(collect()))
    return asyncio.run(model.ainvoke(prompt))
