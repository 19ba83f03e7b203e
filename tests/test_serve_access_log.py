"""uvicorn's access log of ``pacore serve`` shows no key: the query string (where clients
put keys, ``?api_key=...``) is redacted, as are the server's secrets."""

from __future__ import annotations

import httpx

from tests.conftest import wait_for
from tests.serve_helpers import UPSTREAM_KEY, serve_command, serve_process, wait_ready
from tests.servers import free_port

CLIENT_KEY = "sk-client-in-the-query-4417"


def test_the_access_log_shows_no_key_of_the_query_string(scripted, tmp_path):
    upstream = scripted()
    port = free_port()
    log = tmp_path / "serve.log"
    with serve_process(serve_command(upstream, port), log, port) as (served, proc):
        wait_ready(served, proc, log)
        query = {"api_key": CLIENT_KEY, "token": UPSTREAM_KEY}
        for path in ("/v1/models", f"/v1/models/{UPSTREAM_KEY}"):
            assert httpx.get(served.url + path, params=query).status_code in (200, 404)
        wait_for(lambda: log.read_text().count('"GET /v1/models') == 2)
    text = log.read_text()
    assert CLIENT_KEY not in text and UPSTREAM_KEY not in text
    assert '"GET /v1/models?[redacted] HTTP/1.1" 200' in text
    assert '"GET /v1/models/[redacted]?[redacted] HTTP/1.1" 404' in text
