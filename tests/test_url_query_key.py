"""A key in the query string of the endpoint's URL (``http://host/v1?api_key=KEY``) is taken
out of it like ``user:KEY@`` credentials: sent as the Bearer key, never printed, logged or
stored, and the URL's paths (``/models``, ``/chat/completions``) stay whole."""

from pacore_graph import ChatOpenAICompatible
from pacore_graph.eval.manifest import command_line
from pacore_graph.secrets import redact, redact_url, url_secrets

KEY = "sk-pacore-QUERY-5e0d1c2b3a4f6e7d"


def test_the_models_probe_of_a_url_with_a_query_finds_the_models(scripted):
    server = scripted(lambda body: "ok")
    model = ChatOpenAICompatible(base_url=f"{server.base_url}?token={KEY}", model="")
    assert model.list_models() == [server.model]
    other = ChatOpenAICompatible(
        base_url=f"{server.base_url}?api_key={KEY}&api-version=2", model="m", api_key="mine"
    )
    assert other.openai_api_base == server.base_url
    assert other.default_query == {"api-version": "2"}  # sent with every request
    assert other.openai_api_key is not None
    assert other.openai_api_key.get_secret_value() == "mine"  # the explicit key wins


def test_query_keys_are_redacted_in_text_and_urls():
    line = f'127.0.0.1 - "POST /v1/chat/completions?api_key={KEY}&token=abc&n=1 HTTP/1.1" 200'
    assert redact(line, []) == (
        '127.0.0.1 - "POST /v1/chat/completions?api_key=[redacted]&token=[redacted]&n=1 '
        'HTTP/1.1" 200'
    )
    assert redact_url(f"http://me:pw@host/v1?Access_Token={KEY}#x") == (
        "http://[redacted]@host/v1?Access_Token=[redacted]#x"
    )
    assert redact_url("http://host/v1?api-version=2024-02-01&author=someone-else") == (
        "http://host/v1?api-version=2024-02-01&author=someone-else"
    )
    assert redact_url(f"/v1/x?X-Amz-Signature={KEY}&apikey={KEY}&keyword=ok") == (
        "/v1/x?X-Amz-Signature=[redacted]&apikey=[redacted]&keyword=ok"
    )
    assert url_secrets(f"http://host/v1?key={KEY}") == [KEY]


def test_the_eval_manifest_command_line_hides_a_query_key():
    line = command_line(["eval", "x.jsonl", "--base-url", f"http://h:8000/v1?api_key={KEY}"])
    assert KEY not in line
    assert "--base-url 'http://h:8000/v1?api_key=[redacted]'" in line
