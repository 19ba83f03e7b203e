"""Every Python snippet of the README runs as written, in order, in one session (as a reader
pastes them into one notebook), against the scripted server and a real Redis.

The only substitutions are the addresses: the README's vLLM endpoint, Redis URL and
``pacore serve`` URL become the test's loopback servers.
"""

import ast
import asyncio
import re
import textwrap
from pathlib import Path

from pacore_graph.testing import Reply
from tests.serve_helpers import serving

README = Path(__file__).resolve().parent.parent / "README.md"
ENDPOINT = "http://127.0.0.1:8000/v1"
REDIS = "redis://127.0.0.1:6379/0"
SERVE = "http://127.0.0.1:8100/v1"


def python_snippets(text: str) -> list[str]:
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.S | re.M)
    return [textwrap.dedent(body) for _, body in blocks]


def test_the_readme_has_snippets_naming_the_addresses_it_promises():
    snippets = python_snippets(README.read_text())
    assert len(snippets) >= 3
    assert any(ENDPOINT in s for s in snippets) and any(REDIS in s for s in snippets)


def test_every_python_snippet_in_the_readme_runs(scripted, redis_url, capsys):
    server = scripted(lambda body: Reply(content="<think>17*23</think>\\boxed{391}"))
    namespace: dict = {"__name__": "__readme__"}

    async def run_all(serve_url: str) -> None:
        for i, snippet in enumerate(python_snippets(README.read_text())):
            source = snippet.replace(ENDPOINT, server.base_url).replace(REDIS, redis_url)
            source = source.replace(SERVE, serve_url)
            code = compile(
                source, f"README.md snippet {i + 1}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            result = eval(code, namespace)  # a snippet with top-level await returns a coroutine
            if asyncio.iscoroutine(result):
                await result

    with serving(server) as served:  # `pacore serve` on the same scripted model
        asyncio.run(run_all(served.base_url))
    assert server.requests, "no snippet called the model"
    assert "391" in capsys.readouterr().out
