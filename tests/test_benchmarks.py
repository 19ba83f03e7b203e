"""benchmarks/run.py's smallest path, so the harness cannot rot.

The official pipeline is stood in for by a tiny ``Exp`` written here (NOT its code): the
same class attributes and entry point, the same prompts (the project's own template and
reference order), over aiohttp. The harness must run it beside the graph, check on the
simulated server's log that both sent the same prompts, and print the table and goals.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from pacore_graph.testing import ScriptedServer

ROOT = Path(__file__).resolve().parent.parent

FAKE_EXP = """
import asyncio
import json

import aiohttp

from pacore_graph.compaction import order_references, reference_compaction
from pacore_graph.template import render_synthesis_prompt


class Exp:
    model_name = "default"
    api_base = "http://localhost:8000/v1/chat/completions"
    data_path = "data.jsonl"
    output_dir = "outputs"
    num_responses_per_round = [4]
    max_concurrent = 64
    stream = False

    def __init__(self):
        self.num_responses_per_round = self.num_responses_per_round + [1]

    async def _call(self, session, messages):
        body = {"model": self.model_name, "messages": messages}
        async with session.post(self.api_base, json=body) as resp:
            return (await resp.json())["choices"][0]["message"]

    async def _solve(self, session, messages):
        rounds, refs = [], None
        for k in self.num_responses_per_round:
            sent = messages
            if refs is not None:
                sent = [{**messages[0], "content": render_synthesis_prompt(
                    messages[0]["content"], refs)}]
            out = await asyncio.gather(*(self._call(session, sent) for _ in range(k)))
            rounds.append(out)
            kept = order_references([m["content"] for m in out], lambda c: c, 42)
            refs = [reference_compaction(c) for c in kept]
        return {"round_responses": rounds}

    async def async_run(self):
        with open(self.data_path) as f:
            rows = [json.loads(line) for line in f]
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(self._solve(session, r["messages"]) for r in rows))
"""


def fake_extract(directory: Path) -> Path:
    entry = directory / "pacore" / "batch_inference" / "base_exp.py"
    entry.parent.mkdir(parents=True)
    entry.write_text(textwrap.dedent(FAKE_EXP))
    return directory


def run_bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**(env or os.environ), "PYTHONPATH": str(ROOT)},
        timeout=240,  # a hang guard: four test workers may share two loaded cores
    )


def test_quick_c_prints_the_table_beside_the_official_pipeline(tmp_path: Path) -> None:
    official = fake_extract(tmp_path / "extract")
    proc = run_bench(
        "--quick", "--only", "C", "--official", str(official), "--out", str(tmp_path),
        "--name", "smoke",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    row = next(line for line in out.splitlines() if line.startswith("| C: A at zero latency"))
    official_ms, pacore_ms, ratio = (cell.strip() for cell in row.strip("|").split("|")[1:])
    assert float(official_ms) > 0 and float(pacore_ms) > 0 and float(ratio) > 0
    assert "| C: CPU per trajectory <= 1.5 x the official's |" in out
    assert "sent the same prompts in the same groups" in out
    assert "## Profile: pacore at C (148 trajectories)" in out
    assert (tmp_path / "smoke.md").read_text().startswith("# PaCoRe-graph beside the official")
    assert '"goals"' in (tmp_path / "smoke.json").read_text()


def test_without_an_extract_it_says_how_to_make_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PACORE_OFFICIAL"}
    proc = run_bench("--quick", "--only", "A", "--out", str(tmp_path), env=env)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("no official PaCoRe extract given")
    assert "git clone https://github.com/stepfun-ai/PaCoRe" in last
    assert "pip install loguru" in last


def load_simserver():
    spec = importlib.util.spec_from_file_location("simserver", ROOT / "benchmarks" / "simserver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["simserver"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_round_draw_key_draws_by_problem_and_round_whatever_the_prompt() -> None:
    simserver = load_simserver()

    def latencies(draw_key: str, prompts: list[str]) -> list[tuple[int, int, int, float]]:
        """(problem, round, n, latency) of 3 calls per prompt, the prompts one after another."""
        sim = simserver.SimServer(simserver.SimConfig(dist="lognormal", draw_key=draw_key))
        out = []
        for text in prompts:
            messages = [{"role": "user", "content": text}]
            for _ in range(3):
                a = sim.arrive(messages, json.dumps(messages).encode())
                out.append((a.problem, a.round, a.n, a.draw.latency))
        return out

    # Same problem, same first round; the next round quotes other references.
    one = ["[problem 3] Solve x.", "[problem 3] Solve x. References: A, B."]
    other = ["[problem 3] Solve x.", "[problem 3] Solve x. References: A, C."]
    by_round = latencies("round", one)
    assert [a[:3] for a in by_round] == [(3, r, n) for r in (0, 1) for n in range(3)]
    assert by_round == latencies("round", other)
    assert len({a[3] for a in by_round}) == 6  # each (round, n) its own draw
    # Another problem draws other latencies; the default key still follows the prompt.
    assert latencies("round", [p.replace("3", "4") for p in one]) != by_round
    by_prompt = latencies("prompt", one)
    assert by_prompt[:3] == latencies("prompt", other)[:3]
    assert by_prompt[3:] != latencies("prompt", other)[3:]
    assert simserver.SimConfig().draw_key == "prompt"


def test_the_simulated_server_is_the_scripted_server_answering_its_draws() -> None:
    simserver = load_simserver()
    sim = simserver.SimServer(simserver.SimConfig(latency_scale=0.001, stream_interval_s=0.001))
    server = ScriptedServer(sim.respond, model="sim")
    sim.add_routes(server)
    url, root = f"{server.base_url}/chat/completions", server.base_url.removesuffix("/v1")
    messages = [{"role": "user", "content": "[problem 7] Solve x."}]
    with server:
        plain = httpx.post(url, json={"messages": messages}).json()
        streamed = httpx.post(url, json={"messages": messages, "stream": True}).text
        log = httpx.get(f"{root}/sim/log").json()
        stats = httpx.get(f"{root}/sim/stats").json()
    (group,) = sim.arrivals  # one group: the same messages twice
    assert [(e["problem"], e["round"], e["n"]) for e in log] == [(7, 0, 0), (7, 0, 1)]
    assert all(e["group"] == group[:16] and e["sent"] >= e["received"] for e in log)
    assert plain["choices"][0]["message"]["content"] == sim.content(group, 0, log[0]["tokens"])
    assert plain["usage"]["completion_tokens"] == log[0]["tokens"]
    # The stream: its content in one piece per stream interval of its latency.
    events = [json.loads(e[6:]) for e in streamed.split("\n\n") if e.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    pieces = [delta["content"] for delta in deltas if delta]
    assert "".join(pieces) == sim.content(group, 1, log[1]["tokens"])
    assert len(pieces) == max(1, int(log[1]["latency"] / 0.001))
    assert stats["requests"] == 2 and stats["max_in_flight"] == 1
