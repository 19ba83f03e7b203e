"""What the Redis savers' failures say, through ``pacore solve``, ``pacore serve`` and
``langgraph dev``: the cause, and how to fix it, nothing more."""

import threading

import httpx
import redis

from pacore_graph import studio
from pacore_graph.testing import Reply, last_user_text
from tests.conftest import Held, run_in_process, solve_command, wait_for
from tests.serve_helpers import question, respond, serving
from tests.test_redis_faults import one_error_line, restart_empty


def test_an_acl_user_without_eval_is_told_to_grant_it_before_any_call(scripted, own_redis):
    server = scripted(lambda body: Reply(content="\\boxed{391}"))
    locked = own_redis()
    admin = redis.Redis(port=locked.port)
    admin.execute_command("ACL", "SETUSER", "alice", "on", ">pw", "~*", "&*", "+@all", "-eval")
    admin.close()
    url = f"redis://alice:pw@127.0.0.1:{locked.port}/0"
    result = run_in_process(solve_command(server, "What is 17 * 23?", "--redis-url", url))
    assert result.returncode == 2
    assert one_error_line(result.stderr) == (
        f"pacore: error: Redis at redis://127.0.0.1:{locked.port}/0: user alice may not run "
        "EVAL, which the thread lease needs: grant it (ACL SETUSER alice +@scripting)"
    )
    assert server.requests == []


def test_serve_answers_503_when_redis_lost_a_durable_run(scripted, redis_server, redis_url):
    held = Held(answer_first=1, answer="4", final=respond)
    upstream = scripted(held)
    replies = []
    with serving(upstream, redis_url=redis_url) as served:

        def request():
            replies.append(
                httpx.post(
                    f"{served.base_url}/chat/completions",
                    json={"model": "pacore-4", "messages": question()},
                    headers={"Idempotency-Key": "lost-1"},
                    timeout=60,
                )
            )

        client = threading.Thread(target=request)
        client.start()
        try:
            wait_for(lambda: len(upstream.requests) == 4)  # one answered, three held
            restart_empty(redis_server)
        finally:
            held.release.set()
        client.join(timeout=60)
    (reply,) = replies
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["code"] == "checkpoint_store_lost_thread"
    assert "nothing of this run is saved" in error["message"]
    assert not any("Reference 1:" in last_user_text(b) for b in upstream.requests)


async def test_langgraph_dev_takes_a_cluster_url(redis_cluster3_url, monkeypatch):
    monkeypatch.setenv(studio.REDIS_URL_ENV, redis_cluster3_url)
    async with studio.checkpointer() as saver:
        assert saver.cluster
        await saver.asetup()
