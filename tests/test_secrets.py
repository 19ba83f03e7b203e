"""An API key never reaches a checkpoint, a log line, a progress event or a results file,
whether it is given as a key or in the endpoint's URL (``http://user:KEY@host/v1``)."""

import asyncio
import io
import itertools
import json
import logging
import os
import re
import subprocess

import pytest
import redis

from pacore_graph import ChatOpenAICompatible
from pacore_graph.eval import SAMPLE
from pacore_graph.eval.pool import EvalChatModel
from pacore_graph.secrets import RedactingFilter, model_secrets, redact
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import pacore_argv, pacore_in_process, solve_command
from tests.model_calls import call, every_way
from tests.servers import free_port

KEY = "sk-pacore-TEST-7c1f9e2d4b6a8c0e5f"


def redis_values(url):
    client = redis.Redis.from_url(url)
    values = []
    for key in client.scan_iter(count=1000):
        values.append(key)
        kind = client.type(key)
        if kind == b"hash":
            values += [x for kv in client.hgetall(key).items() for x in kv]
        elif kind == b"zset":
            values += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"string":
            values.append(client.get(key))
        elif kind == b"list":
            values += client.lrange(key, 0, -1)
        elif kind == b"set":
            values += list(client.smembers(key))
    return values


def test_the_api_key_is_nowhere_but_the_authorization_header(scripted, redis_url, tmp_path):
    state = {"n": 0}

    def responder(body):
        if "Reference 1:" in last_user_text(body):
            return Reply(content="<think>ok</think>\\boxed{391}")
        state["n"] += 1
        if state["n"] == 1:  # a server echoing the key in its error, as some do
            return Reply(status=401, error=f"Incorrect API key provided: {KEY}")
        return Reply(content=f"391, key {KEY[:6]}")

    server = scripted(responder)
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    result = subprocess.run(
        solve_command(
            server,
            "What is 17 * 23?",
            *("--api-key", KEY, "--rounds", "4", "--concurrency", "1", "--redis-url", redis_url),
            *("--json", "--progress", "--log-level", "DEBUG"),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    # The key did travel where it must, so the checks below are not vacuous.
    assert set(server.authorizations) == {f"Bearer {KEY}"}
    record = json.loads(result.stdout)
    (failed,) = [t for t in record["trajectories"] if t["status"] == "failed"]
    assert failed["error"] == "HTTP 401: Incorrect API key provided: [redacted]"
    assert re.search(
        r"round 1 #\d failed: HTTP 401: Incorrect API key provided: \[redacted\]", result.stderr
    )
    assert "DEBUG" in result.stderr  # the debug log ran
    stored = redis_values(redis_url)
    assert stored  # the run was checkpointed
    assert any(b"[redacted]" in v for v in stored)  # the failure is stored, redacted
    for output in (result.stdout, result.stderr, *(v.decode("latin-1") for v in stored)):
        assert KEY not in output


# -- credentials in the URL -----------------------------------------------------------------


def with_credentials(url, userinfo):
    """``http://host/v1`` as ``http://USERINFO@host/v1``."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo}@{rest}"


@every_way
@pytest.mark.parametrize("where", ["password", "user", "query"])
def test_a_key_in_the_url_is_sent_as_the_bearer_key(scripted, way, where):
    server = scripted(lambda body: "ok")
    base_url = {
        "password": with_credentials(server.base_url, f"me:{KEY}"),
        "user": with_credentials(server.base_url, KEY),
        "query": f"{server.base_url}?api_key={KEY}",
    }[where]
    model = ChatOpenAICompatible(
        base_url=base_url,
        model=server.model,
        direct_http=way != "ainvoke-sdk",
    )
    assert call(model, way).content == "ok"
    assert server.authorizations == [f"Bearer {KEY}"]
    assert model.openai_api_base == server.base_url
    assert KEY not in repr(model)
    assert model_secrets(model) == [KEY]


def test_an_explicit_key_wins_over_the_urls(scripted):
    server = scripted(lambda body: "ok")
    model = ChatOpenAICompatible(
        base_url=with_credentials(server.base_url, f"me:{KEY}"),
        model=server.model,
        api_key="sk-explicit-key-0123",
    )
    asyncio.run(model.ainvoke("a"))
    model.invoke("b")
    assert server.authorizations == ["Bearer sk-explicit-key-0123"] * 2
    assert model.openai_api_base == server.base_url


def test_a_key_in_the_url_is_nowhere_but_the_authorization_header(scripted, redis_url):
    echoed = itertools.count()

    def responder(body):
        if "Reference 1:" in last_user_text(body):
            return Reply(content="<think>ok</think>\\boxed{391}")
        if next(echoed) == 0:  # a server echoing the key in its error, as some do
            return Reply(status=401, error=f"Incorrect API key provided: {KEY}")
        return Reply(content="391")

    server = scripted(responder)
    result = subprocess.run(
        pacore_argv(
            *("solve", "What is 17 * 23?"),
            *("--base-url", with_credentials(server.base_url, f"me:{KEY}")),
            *("--rounds", "4", "--concurrency", "1", "--redis-url", redis_url),
            *("--json", "--progress", "--log-level", "DEBUG"),
        ),
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )
    assert result.returncode == 0, result.stderr
    assert set(server.authorizations) == {f"Bearer {KEY}"}
    record = json.loads(result.stdout)
    (failed,) = [t for t in record["trajectories"] if t["status"] == "failed"]
    assert failed["error"] == "HTTP 401: Incorrect API key provided: [redacted]"
    assert "DEBUG" in result.stderr and "HTTP Request: GET http://127.0.0.1" in result.stderr
    stored = redis_values(redis_url)
    assert stored
    for output in (result.stdout, result.stderr, *(v.decode("latin-1") for v in stored)):
        assert KEY not in output


@pytest.mark.parametrize("where", ["password", "query"])
def test_an_unreachable_url_with_a_key_is_reported_without_it(where):
    port = free_port()
    dead = {
        "password": f"http://me:{KEY}@127.0.0.1:{port}/v1",
        "query": f"http://127.0.0.1:{port}/v1?api_key={KEY}",
    }[where]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    argv = ("solve", "2+2?", "--base-url", dead, "--model", "m", "--log-level", "DEBUG")
    result = pacore_in_process(*argv, env=env)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pacore: error: cannot reach the model endpoint http://127.0.0.1:")
    assert "?" not in last.split("endpoint ", 1)[1].split(" ")[0]  # printed without its query
    assert KEY not in result.stderr + result.stdout


@pytest.mark.parametrize("where", ["flag", "query"])
def test_eval_keeps_an_echoed_key_out_of_redis_and_every_output(
    scripted, redis_url, tmp_path, where
):
    """The eval's graph runs on its own model (the pool), which held no secret: the echoed
    key went into the trajectory records in Redis. A key in the URL's query is also kept
    out of the manifest's command line."""
    echoed = itertools.count()

    def responder(body):
        if next(echoed) == 0:
            return Reply(status=401, error=f"Incorrect API key provided: {KEY}")
        return Reply(content="\\boxed{391}")

    server = scripted(responder)
    out = tmp_path / "out"
    key = {
        "flag": ("--base-url", server.base_url, "--api-key", KEY),
        "query": ("--base-url", f"{server.base_url}?api_key={KEY}"),
    }[where]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = pacore_in_process(
        *("eval", str(SAMPLE), *key, "--rounds", "2", "--limit", "2"),
        *("--concurrency", "1", "--redis-url", redis_url, "--out", str(out), "--no-plot"),
        *("--progress", "--log-level", "DEBUG"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert set(server.authorizations) == {f"Bearer {KEY}"}
    stored = redis_values(redis_url)
    assert any(b"[redacted]" in v for v in stored)  # the 401 was stored, redacted
    if where == "query":
        assert "api_key=[redacted]" in (out / "manifest.json").read_text()
    files = [p.read_text(errors="replace") for p in out.iterdir() if p.is_file()]
    for output in (result.stdout, result.stderr, *files, *(v.decode("latin-1") for v in stored)):
        assert KEY not in output


def test_every_output_path_redacts_url_credentials_and_tracebacks():
    text = f"GET http://me:{KEY}@host:8000/v1/models and redis://:hunter2hunter2@r:6379/0"
    assert redact(text, []) == (
        "GET http://[redacted]@host:8000/v1/models and redis://[redacted]@r:6379/0"
    )
    assert redact("see https://host/path?mail=a@b.c", []) == "see https://host/path?mail=a@b.c"
    # A log record's traceback carries exception messages: redacted like its message.
    stream = io.StringIO()
    logger = logging.getLogger("pacore.test-redaction")
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([KEY]))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"the server said: Incorrect API key provided: {KEY}")
        except RuntimeError:
            logger.error("call failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert "Incorrect API key provided: [redacted]" in stream.getvalue()
    assert KEY not in stream.getvalue()


def test_a_wrapped_model_keeps_its_secrets(scripted):
    """Graphs take bound models (``bind``, ``bind_tools``) and wrappers (the eval's pool):
    their secrets are the wrapped model's."""
    model = ChatOpenAICompatible(base_url="http://127.0.0.1:9/v1", model="m", api_key=KEY)
    assert model_secrets(model.bind(temperature=0.2)) == [KEY]
    assert model_secrets(model.with_retry()) == [KEY]
    assert model_secrets(EvalChatModel(inner=model)) == [KEY]
