"""``manifest.json``: what an eval ran, beside what it wrote, so a table can be traced back to
its model, endpoint, settings, data and command line. Never a secret: the endpoint has no
credentials, and the command line has ``--api-key``'s value and URL passwords redacted."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import platform
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pacore_graph.context import DEFAULTS, merge_context
from pacore_graph.eval.runner import EvalSpec
from pacore_graph.eval.samples import SAMPLING_FIELDS
from pacore_graph.resume import run_settings
from pacore_graph.secrets import REDACTED, redact, redact_url


def now() -> str:
    """The current time, ISO 8601 in UTC to the second (``2025-01-31T12:00:00Z``)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def package_version() -> str:
    """pacore-graph's installed version (``unknown`` when run from a bare checkout)."""
    try:
        return importlib.metadata.version("pacore-graph")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def command_line(argv: Sequence[str], secrets: Iterable[str] = ()) -> str:
    """``pacore <argv>`` as a shell line, with every ``--api-key`` value (argparse's
    prefixes too: ``--api``), URL credentials and known secret replaced by ``[redacted]``."""
    words: list[str] = []
    hide = False  # the previous word was --api-key
    for word in argv:
        flag, eq, _ = word.partition("=")
        if hide:
            word, hide = REDACTED, False
        elif flag.startswith("--") and len(flag) > 2 and "--api-key".startswith(flag):
            word, hide = (f"{flag}={REDACTED}", False) if eq else (word, True)
        words.append(redact_url(word))  # before quoting, so the quotes cover [redacted]
    return redact(shlex.join(["pacore", *words]), secrets)


def dataset_info(path: Path, count: int) -> dict[str, Any]:
    """The benchmark file: name, path, SHA-256 of its bytes, and problems evaluated."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"file": path.name, "path": str(path), "sha256": digest, "problems": count}


def build_manifest(
    *,
    backend: Mapping[str, Any],
    dataset: Mapping[str, Any],
    spec: EvalSpec,
    command: str,
    started_at: str,
    finished_at: str,
    secrets: Iterable[str] = (),
    wall: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest of one eval: ``backend`` (``kind``, ``endpoint`` without credentials,
    ``model``), ``dataset`` (from `dataset_info`), ``spec`` with its ``context`` resolved,
    ``command`` (from `command_line`), the times (from `now`), ``wall`` (from `wall_stats`)
    as each setting's ``wall_seconds``; ``secrets`` are redacted wherever they appear."""
    resolved = run_settings(merge_context(DEFAULTS, dict(spec.context)))
    resolved.pop("rounds", None)  # each setting has its own
    manifest = {
        "model": backend.get("model"),
        "backend": dict(backend),
        "dataset": dict(dataset),
        "settings": [
            {
                "name": s.name,
                "label": s.label,
                "kind": s.kind,
                "round_vector": list(s.round_vector),
                **({"wall_seconds": dict(wall[s.name])} if wall and s.name in wall else {}),
            }
            for s in spec.settings
        ],
        "runs": spec.runs,
        "seed": resolved.get("seed"),
        "pool": spec.pool,
        "pool_seed": spec.pool_seed if spec.pool is not None else None,
        "sampling": {k: resolved.get(k) for k in SAMPLING_FIELDS},
        "pacore": {k: v for k, v in resolved.items() if k not in SAMPLING_FIELDS},
        "concurrency": spec.concurrency,
        "markers": list(spec.markers),
        "pacore_version": package_version(),
        "python": platform.python_version(),
        "command": command,
        "started_at": started_at,
        "finished_at": finished_at,
    }
    return _scrub(manifest, list(secrets))


def _scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with every secret redacted from its strings (``extra_body`` may hold one)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, secrets) for v in value]
    return value


__all__ = ["build_manifest", "command_line", "dataset_info", "now", "package_version"]
