"""benchmarks/chaos.py's smallest run, so the chaos check cannot rot: five runs of
``pacore solve`` on Redis, each SIGKILLed at one of the five moments, resumed with
``--wait`` and run once more, keep their accounting and print the table."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_five_killed_runs_resume_without_asking_twice_and_store_what_they_print(tmp_path):
    chaos = [sys.executable, str(ROOT / "benchmarks" / "chaos.py")]
    run = subprocess.run(
        [*chaos, "--runs", "5", "--seed", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    header = "| moment | runs | kills landed | resumed ok | calls asked twice | record mismatches |"
    assert header in run.stdout
    # Any five runs meet all five moments; every check held in each.
    assert "| all | 5 | " in run.stdout and "| 5 | 0 | 0 |" in run.stdout
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
