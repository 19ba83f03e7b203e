"""benchmarks/chaos.py's smallest run, so the chaos check cannot rot: five runs of
``pacore solve`` on Redis, each SIGKILLed at one of the five moments, resumed with
``--wait`` and run once more, keep their accounting and print the table."""

import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pacore_graph.testing import Reply, last_user_text
from tests.conftest import pacore_argv, run_in_process, saved_trajectories

ROOT = Path(__file__).resolve().parent.parent


def test_five_killed_runs_resume_without_asking_twice_and_store_what_they_print(
    tmp_path, capsys, monkeypatch
):
    # The harness runs in this process (its runs of `pacore solve` are processes of their
    # own); the path it extends for its imports is restored after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "chaos.py")
    assert spec is not None and spec.loader is not None
    chaos = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "chaos", chaos)  # dataclasses look their module up there
    spec.loader.exec_module(chaos)
    status = chaos.main(["--runs", "5", "--seed", "1", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    header = "| moment | runs | kills landed | resumed ok | calls asked twice | record mismatches |"
    assert header in out
    # Any five runs meet all five moments; every check held in each.
    assert "| all | 5 | " in out and "| 5 | 0 | 0 |" in out
    results = json.loads((tmp_path / "chaos.json").read_text())["results"]
    assert sorted(r["moment"] for r in results) == sorted(
        ["before first call", "mid-round", "compaction", "final call", "after answer"]
    )
    assert all(r["ok"] and r["resumed_ok"] for r in results)
    assert all(r["asked_twice"] == 0 and r["mismatches"] == 0 for r in results)
    # A run killed mid-round resumes only what Redis did not hold.
    mid = next(r for r in results if r["moment"] == "mid-round")
    assert mid["landed"] and mid["asked"]["again"] == {}
    assert (tmp_path / "chaos.md").read_text().startswith("# Chaos")


# `pacore solve` that dies (as a SIGKILL would) just before the checkpoint closing round 1 is
# stored: that step's trajectory writes are all in Redis, its checkpoint is not.
DIES_BEFORE_CHECKPOINT = """
import os
import sys

from pacore_graph.checkpoints import AsyncRedisSaver
from pacore_graph.cli import main

store = AsyncRedisSaver.aput


async def aput(self, config, checkpoint, metadata, new_versions):
    if metadata.get("step") == 2:  # the checkpoint after round 1's trajectories
        os._exit(9)
    return await store(self, config, checkpoint, metadata, new_versions)


AsyncRedisSaver.aput = aput
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_between_a_rounds_stored_writes_and_its_checkpoint_resumes(
    scripted, redis_url, tmp_path
):
    calls = itertools.count()
    server = scripted(lambda body: Reply(content=f"<think>t</think>[call {next(calls)}] 391"))
    args = [
        *("solve", "What is 17 * 23?", "--base-url", server.base_url, "--rounds", "4,2"),
        *("--concurrency", "4", "--redis-url", redis_url, "--thread-id", "torn"),
        *("--lease-ttl", "2", "--json", "--wait"),
    ]
    script = tmp_path / "dies_before_checkpoint.py"
    script.write_text(DIES_BEFORE_CHECKPOINT)
    first = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    if first.returncode != 9 or saved_trajectories(redis_url, "torn") != 4:
        pytest.fail(f"the run did not die with round 1 stored: {first.stderr[-500:]}")
    before = len(server.requests)
    assert before == 4
    rerun = run_in_process(pacore_argv(*args))
    assert rerun.returncode == 0, rerun.stderr
    new = server.requests[before:]
    assert "thread torn: resuming" in rerun.stderr
    assert sum("Reference 1:" not in last_user_text(b) for b in new) == 0  # round 1 is kept
    assert len(new) == 3
