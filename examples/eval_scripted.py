"""Reproduce ``examples/eval_sample/`` without a GPU: ``pacore eval`` on the shipped sample
against a scripted server that plays a reasoning model.

python examples/eval_scripted.py [--out eval-results/sample]   # writes what eval_sample holds
python examples/eval_scripted.py curate SAMPLE --pool 24 --out curated.jsonl   # any pacore
    command against the same server (``SAMPLE`` is the shipped sample file)

The scripted model is right on round 1 with a per-problem probability (easy problems
often, hard ones rarely, wrong answers from a few distractors), and its synthesis is
right more often the more of its references are right, sometimes with none of them
(emergent correctness). Its thinking is a few lines of work, and the synthesis cites the
references it agrees with ("Reference 2 and Reference 5 say ..."). Every reply is drawn
from a seeded RNG keyed by the problem and the call's position, and ``--concurrency 1``
fixes the call order, so the output is the same on every machine. The numbers show the
harness, not PaCoRe-8B.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import sys
import threading
from pathlib import Path

from pacore_graph.cli import main as pacore
from pacore_graph.eval import SAMPLE, load_problems
from pacore_graph.testing import Reply, ScriptedServer, last_user_text

OUT = Path("eval-results") / "sample"  # not the committed examples/eval_sample/

# Chance that one round-1 trajectory is right, by problem (sample-1 .. sample-8).
SKILL = [0.9, 0.75, 0.6, 0.55, 0.45, 0.35, 0.2, 0.1]
# The wrong answers a problem attracts: a common slip and two rarer ones.
DISTRACTORS = {
    "391": ["381", "401", "371"],
    "1207": ["1197", "1625", "1043"],
    "294": ["252", "336", "288"],
    "173": ["193", "240", "163"],
    "34": ["36", "6", "26"],
    "\\frac{9}{2}": ["\\frac{9}{4}", "4", "\\frac{18}{4}"],
    "\\frac{5}{12}": ["\\frac{7}{12}", "\\frac{2}{7}", "\\frac{1}{12}"],
    "\\frac{1}{4}": ["\\frac{1}{3}", "4", "\\frac{3}{12}"],
}


class ScriptedReasoner:
    """The responder: deterministic per (problem, call number), thread-safe."""

    def __init__(self) -> None:
        problems = load_problems(SAMPLE)
        self.by_text = {p.messages[-1]["content"]: (i, p.answer) for i, p in enumerate(problems)}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def _rng(self, text: str, kind: str) -> random.Random:
        with self.lock:
            n = self.calls[kind + text] = self.calls.get(kind + text, -1) + 1
        seed = hashlib.sha256(f"{kind}|{text}|{n}".encode()).hexdigest()
        return random.Random(seed)

    def _wrong(self, rng: random.Random, gold: str) -> str:
        return rng.choices(DISTRACTORS[gold], weights=[6, 2, 1])[0]

    def __call__(self, body: dict) -> Reply:
        text = last_user_text(body)
        if "Reference Responses:" not in text:
            index, gold = self.by_text[text]
            rng = self._rng(text, "explore")
            answer = gold if rng.random() < SKILL[index] else self._wrong(rng, gold)
            work = "Let me work it out step by step, checking each operation twice. " * 8
            return Reply(
                content=f"<think>{work}</think>The answer is \\boxed{{{answer}}}.",
                completion_tokens=rng.randint(1500, 4500),
            )
        problem = text.split("Original Problem:\n", 1)[1].split("\n\nReference Responses:")[0]
        index, gold = self.by_text[problem]
        refs = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", text.split("Reference 1:", 1)[1])
        right = sum(r == gold for r in refs) / max(len(refs), 1)
        rng = self._rng(problem, "synthesize")
        # Right mostly when most references are, sometimes from none (emergent correctness).
        chance = 0.97 if right > 0.5 else 0.7 if right > 0 else 0.5
        answer = gold if rng.random() < chance else self._wrong(rng, gold)
        cited = " and ".join(f"Reference {i}" for i, r in enumerate(refs, 1) if r == answer)
        agree = f"{cited} say {answer}." if cited else "No reference says so."
        content = f"<think>Comparing the references. {agree}</think>So it is \\boxed{{{answer}}}."
        return Reply(content=content, completion_tokens=rng.randint(2000, 4000))


def run(out: Path, progress: bool = False, command: list[str] | None = None) -> int:
    """Runs the sample eval into ``out``, or ``command`` (pacore's arguments, ``SAMPLE`` for
    the sample file), against the scripted server; returns pacore's exit status."""
    sample = os.path.relpath(SAMPLE)  # so the manifest names no home directory
    with ScriptedServer(ScriptedReasoner(), model="scripted-reasoner") as server:
        if command:
            argv = [sample if word == "SAMPLE" else word for word in command]
        else:
            argv = ["eval", sample, "--rounds", "low", "--rounds", "8,2"]
            argv += ["--baseline", "single", "--baseline", "sc@4", "--baseline", "sc@16"]
            argv += ["--runs", "4", "--pool", "16", "--out", str(out)]
        argv += ["--base-url", server.base_url, "--api-key", "none", "--concurrency", "1"]
        return pacore([*argv, "--progress" if progress else "--no-progress"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="a pacore command instead")
    args = parser.parse_args()
    sys.exit(run(args.out, sys.stderr.isatty(), args.command))
