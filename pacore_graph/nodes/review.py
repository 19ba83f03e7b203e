"""``review`` (the ``review`` setting): after a round's compact, a person approves, replaces
or finishes with the references the next round is sent, through LangGraph's ``interrupt``;
`review_in_editor` does it in a terminal (``pacore solve --review``)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from langgraph.types import interrupt

from pacore_graph.errors import InvalidInputError
from pacore_graph.messages import last_user_index, message_text
from pacore_graph.state import PaCoReState
from pacore_graph.trajectories import latest_trajectories, reference_text

SHAPES = (
    'null or {} (approve), {"references": [str, ...]} (send exactly these), or '
    '{"action": "finish"} (the final synthesis now)'
)
APPROVE = {"action": "approve"}
"""What ``Command(resume=None)`` becomes (LangGraph takes None and {} for no resume)."""


def review(state: PaCoReState) -> dict[str, Any]:
    """Pauses with the references (text, trajectory index, status, tokens); the resume
    value decides what `synthesize` sends next, which records an edit."""
    r, messages = state["rounds_done"][-1]["round"], state["messages"]
    pool = sorted(latest_trajectories(state["trajectories"]), key=lambda t: -t["round"])
    shown = []
    for text in state.get("references") or []:
        t = next((t for t in pool if reference_text(t) == text), None)  # None: a person's text
        pool = [u for u in pool if u is not t]
        status = t and ("truncated" if t["truncated"] else t["status"])
        tokens = t and t["completion_tokens"]
        shown.append({"index": t and t["index"], "status": status, "tokens": tokens, "text": text})
    problem = message_text(messages[last_user_index(messages)])
    request = {"round": r, "problem": problem, "references": shown, "resume": SHAPES}
    value = interrupt(request)
    while (error := resume_error(value)) is not None:  # LangGraph keeps a resume value: ask again
        value = interrupt({**request, "error": error})
    review = "finish" if value == {"action": "finish"} else "approved"
    update = {"references": value["references"]} if value and "references" in value else {}
    return {**update, "rounds_done": [{"round": r, "review": review}]}


def resume_error(value: Any) -> str | None:
    """Why ``value`` is no resume value of a `review` pause, in one line; None if it is."""
    refs = value.get("references") if isinstance(value, dict) and len(value) == 1 else None
    if value in (None, {}, APPROVE, {"action": "finish"}) or (
        isinstance(refs, list) and all(isinstance(x, str) for x in refs)
    ):
        return None
    return f"a review resumes with {SHAPES}, not {value!r:.80}"


_HEADER = re.compile(r"^=== reference .*===$", re.MULTILINE)


def review_in_editor(request: dict[str, Any]) -> Any:
    """The resume value of a `review` pause: its references edited in ``$VISUAL`` or
    ``$EDITOR`` (default vi), kept, dropped, reordered, rewritten or added."""
    text = (
        f"# Round {request['round']}: the next round is sent these. Edit, reorder, delete, or "
        "add one under '=== reference ==='.\n# A line FINISH here: the final synthesis now.\n"
    )
    for ref in request["references"]:
        about = f"trajectory {ref['index']}, {ref['status']}, {ref['tokens']} tokens"
        text += f"=== reference ({about}) ===\n{ref['text']}\n"
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory() as tmp:
        (path := Path(tmp, "references.md")).write_text(text, encoding="utf-8")
        if subprocess.run([*shlex.split(editor), str(path)]).returncode:
            raise InvalidInputError(f"the editor {editor!r} failed: the run stays paused")
        head, *parts = _HEADER.split(path.read_text(encoding="utf-8"))
    if "FINISH" in head.splitlines():
        return {"action": "finish"}
    refs = [p.strip() for p in parts if p.strip()]
    unchanged = refs == [r["text"].strip() for r in request["references"]]
    return None if unchanged else {"references": refs}
