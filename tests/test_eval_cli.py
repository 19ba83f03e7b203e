"""``pacore eval`` as a user runs it: files written, and one-line errors before any model call."""

import contextlib
import csv
import datetime
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import shlex
import struct
import subprocess
import sys
from pathlib import Path

from pacore_graph.cli import main
from pacore_graph.eval import SAMPLE
from pacore_graph.eval.manifest import command_line
from tests.conftest import Gate
from tests.servers import free_port
from tests.test_eval_runner import scenario

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_eval_writes_table_csv_plot_and_rows(scripted, tmp_path, capsys):
    server = scripted(scenario)
    out = tmp_path / "results"
    argv = ["eval", str(SAMPLE), "--base-url", server.base_url, "--rounds", "low"]
    argv += ["--baseline", "single", "--baseline", "sc@4", "--runs", "2", "--pool", "5"]
    status = main([*argv, "--out", str(out), "--concurrency", "8", "--progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert captured.out.splitlines()[:5] == [
        "| setting | K | all (8) | arithmetic (5) | fractions (3) |",
        "|---|---|---|---|---|",
        "| single | [1] | 50.0 (0.10k) | 80.0 (0.10k) | 0.0 (0.10k) |",
        "| SC@4 | [4] | 50.0 (0.40k) | 80.0 (0.40k) | 0.0 (0.40k) |",
        "| PaCoRe low | [4, 1] | 75.0 (0.44k) | 100.0 (0.44k) | 33.3 (0.44k) |",
    ]
    assert (
        "| PaCoRe low | 75.0 | [36.3, 100.0] | 440 | 2 | r1 1.00 | r2 0.00 | 0 | 4/8 (50.0%) | 0 |"
        in (captured.out)
    )
    table, wall = (out / "table.md").read_text(), (out / "wall_time.md").read_text()
    assert captured.out == table + "\n" + wall
    bar = captured.err.replace("\r", "\n").splitlines()
    # 8 pools of 5 and 16 synthesis calls; TTC tokens 100 a pooled trajectory, 40 a synthesis.
    assert any(
        "8/8" in line and "runs=48/48" in line and "traj=56" in line and "tokens=4,640" in line
        for line in bar
    ), captured.err
    assert (out / "accuracy_vs_ttc.png").read_bytes()[:4] == b"\x89PNG"
    # 5 pooled round-1 trajectories per problem, one synthesis per PaCoRe run.
    assert len(server.requests) == 8 * 5 + 8 * 2
    pool = [json.loads(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    assert [len(p["samples"]) for p in pool] == [5] * 8

    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 8
    first = rows[0]
    assert list(first)[:4] == [
        "request_id",
        "final_response",
        "final_reasoning_content",
        "round_responses",
    ]
    assert first["setting"] == "single" and first["run"] == 1 and first["request_id"] == "sample-1"
    assert (first["gold"], first["answer"], first["correct"]) == ("391", "391", True)
    assert first["grader"] == "math-verify" and first["ttc_tokens"] == 100

    table = {(r["setting"], r["category"]): r for r in csv.DictReader((out / "table.csv").open())}
    assert float(table[("pacore:low", "all")]["accuracy"]) == 75.0
    assert float(table[("pacore:low", "all")]["mean_ttc"]) == 440.0
    assert table[("sc@4", "fractions")]["cell"] == "0.0 (0.40k)"


def error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_bad_lines_fail_before_any_model_call(scripted, tmp_path, capsys):
    server = scripted(scenario)
    path = tmp_path / "problems.jsonl"
    path.write_text('{"problem": "1+1?", "answer": 2}\n{"problem": "2+2?"\n{"problem": "x"}\n')
    status = main(["eval", str(path), "--base-url", server.base_url, "--out", str(tmp_path)])
    assert status == 2
    line = error_line(capsys)
    assert line.startswith(f"pacore: error: {path}:2: not JSON")
    assert f"{path}:3: missing 'answer'" in line
    assert server.requests == []
    assert not (tmp_path / "results.jsonl").exists()


def test_bad_settings_are_one_line_errors(scripted, capsys):
    server = scripted(scenario)
    base = ["eval", str(SAMPLE), "--base-url", server.base_url]
    assert main([*base, "--baseline", "sc@0"]) == 2
    assert error_line(capsys) == (
        "pacore: error: unknown baseline 'sc@0': use single or sc@N (N >= 1), e.g. sc@16"
    )
    assert main([*base, "--rounds", "high", "--pool", "8"]) == 2
    assert error_line(capsys) == (
        "pacore: error: --pool 8 is smaller than the 32 first-round trajectories a run of "
        "PaCoRe high draws"
    )
    assert main([*base, "--rounds", "0"]) == 2
    assert "every round needs K >= 1" in error_line(capsys)
    assert server.requests == []


def test_unreachable_endpoint_and_redis_are_one_line_errors(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["eval", str(SAMPLE), "--base-url", dead, "--model", "m"]) == 2
    assert error_line(capsys).startswith(f"pacore: error: cannot reach the model endpoint {dead}")
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["eval", str(SAMPLE), "--base-url", dead, "--redis-url", redis_url]) == 2
    assert error_line(capsys).startswith(f"pacore: error: Redis at {redis_url} is unreachable")


def test_missing_eval_extra_is_named(monkeypatch, scripted, capsys):
    server = scripted(scenario)
    monkeypatch.setitem(sys.modules, "math_verify", None)  # as if not installed
    assert main(["eval", str(SAMPLE), "--base-url", server.base_url]) == 2
    assert error_line(capsys) == (
        "pacore: error: pacore eval's grading needs math_verify, which is not installed: "
        "pip install 'pacore-graph[eval]'"
    )
    assert server.requests == []


def test_solve_never_imports_the_eval_extra():
    code = (
        "import sys, pacore_graph.cli; "
        "print(sorted(m for m in ('math_verify', 'matplotlib', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_example_output_is_reproducible(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("eval_scripted", EXAMPLES / "eval_scripted.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # By default it writes into a folder of its own, not over the committed copy.
    assert EXAMPLES not in example.OUT.resolve().parents
    assert example.run(tmp_path) == 0, capsys.readouterr().err
    committed = EXAMPLES / "eval_sample"
    # The committed copy has every file a run writes (the timed ones as one run made them).
    assert {p.name for p in committed.iterdir()} == {p.name for p in tmp_path.iterdir()}
    for name in ("table.md", "table.csv", "results.jsonl", "pool.jsonl"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name


def test_eval_shows_its_backend_and_calls_in_flight_before_any_answer(scripted, tmp_path):
    err = io.StringIO()
    gate = Gate(scenario)
    server = scripted(gate)
    gate.open_when(lambda: "calls=4" in err.getvalue())  # 4 round-1 calls, none answered
    argv = ["eval", str(SAMPLE), "--base-url", server.base_url, "--rounds", "4", "--limit", "1"]
    with contextlib.redirect_stderr(err):
        assert main([*argv, "--no-plot", "--progress", "--out", str(tmp_path)]) == 0
    text = err.getvalue()
    assert gate.opened.is_set(), text
    assert text.index("pacore eval: 1 problems; starting the backend") < text.index(
        f"backend: openai {server.base_url} model scripted"
    )


def test_labels_name_the_rows_of_parallel_against_sequential(scripted, tmp_path, capsys):
    server = scripted(scenario)
    argv = ["eval", str(SAMPLE), "--base-url", server.base_url, "--limit", "1", "--no-plot"]
    argv += ["--rounds", "2", "--label", "parallel [2]", "--rounds", "1,1,1"]
    argv += ["--label", "sequential [1x2]", "--out", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| parallel [2] | [2, 1] |")
    assert lines[3].startswith("| sequential [1x2] | [1, 1, 1] |")
    assert len(server.requests) == 3 + 3


def test_eval_takes_the_run_options_solve_takes(scripted, tmp_path, capsys):
    server = scripted(scenario)
    argv = ["eval", str(SAMPLE), "--base-url", server.base_url, "--rounds", "2", "--limit", "1"]
    argv += ["--extra-body", '{"top_k": 20}', "--min-success", "1", "--drop-truncated"]
    argv += ["--max-ttc-tokens", "100000", "--context-limit", "100000", "--no-plot"]
    status = main([*argv, "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    assert len(server.requests) == 3
    assert all(body["top_k"] == 20 for body in server.requests)


def png_text(path):
    """The tEXt fields of a PNG file."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    fields, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            fields[key.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length
    return fields


def test_eval_writes_a_manifest_of_what_it_ran(scripted, tmp_path, capsys):
    server = scripted(scenario)
    key = "sk-manifest-TEST-0123456789"
    out = tmp_path / "out"
    argv = ["eval", str(SAMPLE), "--base-url", server.base_url, "--api-key", key]
    argv += ["--rounds", "2", "--rounds", "4,2,1", "--baseline", "sc@2", "--runs", "2"]
    argv += ["--limit", "2", "--seed", "7", "--temperature", "0.6", "--top-p", "0.9"]
    argv += ["--max-tokens", "64", "--concurrency", "4", "--out", str(out)]
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    assert main(argv) == 0, capsys.readouterr().err
    after = datetime.datetime.now(datetime.UTC)
    assert "manifest.json" in capsys.readouterr().err  # named among the files written

    text = (out / "manifest.json").read_text()
    assert key not in text
    manifest = json.loads(text)
    assert manifest["model"] == "scripted"
    assert manifest["backend"] == {
        "kind": "openai",
        "endpoint": server.base_url,
        "model": "scripted",
    }
    assert manifest["dataset"]["file"] == "sample.jsonl" and manifest["dataset"]["problems"] == 2
    assert manifest["dataset"]["sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert [(s["name"], s["round_vector"]) for s in manifest["settings"]] == [
        ("sc@2", [2]),
        ("pacore:2", [2, 1]),
        ("pacore:4,2", [4, 2, 1]),  # the paper's notation runs as written
    ]
    assert (manifest["runs"], manifest["seed"], manifest["pool"]) == (2, 7, None)
    assert manifest["sampling"] == {
        "temperature": 0.6,
        "top_p": 0.9,
        "max_tokens": 64,
        "extra_body": None,
    }
    assert manifest["pacore"]["min_success"] == 0.5  # defaults are recorded resolved
    assert manifest["pacore_version"] == importlib.metadata.version("pacore-graph")
    shown = ["[redacted]" if word == key else word for word in argv]
    assert manifest["command"] == shlex.join(["pacore", *shown])
    started = datetime.datetime.fromisoformat(manifest["started_at"])
    finished = datetime.datetime.fromisoformat(manifest["finished_at"])
    assert before <= started <= finished <= after
    # The plot says what it shows: the model and the benchmark file.
    assert png_text(out / "accuracy_vs_ttc.png")["Title"] == "scripted on sample.jsonl"


def test_the_manifest_command_line_hides_every_secret():
    argv = ["eval", "p.jsonl", "--api-key", "k1", "--api-key=k2", "--api", "k3"]
    argv += ["--base-url", "http://u:pw@h:8000/v1", "--redis-url=redis://:pw2@r:6379/0"]
    argv += ["--extra-body", '{"token": "sk-long-secret-value"}']
    assert command_line(argv, ["sk-long-secret-value"]) == (
        "pacore eval p.jsonl --api-key '[redacted]' '--api-key=[redacted]' --api '[redacted]' "
        # The user part of URL credentials may be the key as well: all of it goes.
        "--base-url 'http://[redacted]@h:8000/v1' '--redis-url=redis://[redacted]@r:6379/0' "
        '--extra-body \'{"token": "[redacted]"}\''
    )
