"""An API key never reaches a checkpoint, a log line, a progress event or a results file."""

import json
import os
import re
import subprocess
import sys

import redis

from pacore_graph.testing import Reply, last_user_text

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
        [
            sys.executable,
            "-m",
            "pacore_graph.cli",
            "solve",
            "What is 17 * 23?",
            "--base-url",
            server.base_url,
            "--api-key",
            KEY,
            "--rounds",
            "4",
            "--concurrency",
            "1",
            "--redis-url",
            redis_url,
            "--json",
            "--progress",
            "--log-level",
            "DEBUG",
        ],
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
