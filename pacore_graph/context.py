"""Per-run settings (LangGraph ``context_schema``), layered over the graph's defaults."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from pacore_graph.compaction import Compaction
from pacore_graph.rounds import RoundsSpec


@dataclass(kw_only=True)
class PaCoReContext:
    """Settings of one run; a field left ``None`` takes the graph's default.

    Pass per run with ``graph.invoke(x, context={"rounds": "low", "temperature": 0.6})``;
    Studio shows the same fields as a form.
    """

    rounds: RoundsSpec | None = None
    """Exploration rounds: preset low/medium/high, an int, "32,4" or [32, 4]. [1] is appended."""
    temperature: float | None = None
    """Sampling temperature (reference: 1.0)."""
    top_p: float | None = None
    """Nucleus sampling (reference: 1.0)."""
    max_tokens: int | None = None
    """Generation limit per call; None leaves it to the server (the reference sent 131072)."""
    extra_body: dict[str, Any] | None = None
    """Extra request fields for OpenAI-compatible servers (vLLM's top_k, chat_template_kwargs)."""
    seed: int | None = None
    """Seed of the reference order's shuffle (reference: 42, fresh each round)."""
    compaction: str | Compaction | None = None
    """Compaction rule: "reference" (text after the last </think>), "boxed", or a callable."""
    empty_references: Literal["template", "problem"] | None = None
    """When M is empty: "template" renders P(x, []) as the reference code does (default);
    "problem" sends the plain problem as the paper describes."""
    drop_truncated: bool | None = None
    """Leave trajectories that hit max_tokens (finish_reason "length") out of M (default False)."""
    context_limit: int | None = None
    """Largest synthesis prompt in tokens; None disables the check."""
    on_context_overflow: Literal["error", "drop_longest"] | None = None
    """Over context_limit: "error" (default) stops with ContextLimitError before the call;
    "drop_longest" leaves out the longest references until the prompt fits."""
    min_success: int | float | None = None
    """Quorum of a round: an int is a count, a float in (0, 1] a fraction of K (rounded up).
    Default 0.5: a round goes on when at least half of its trajectories finished; below
    it the run stops with QuorumError, and resuming the thread retries the failed ones."""
    max_ttc_tokens: int | None = None
    """Budget of completion tokens (all calls of the run). When it runs out the run skips to
    the final synthesis over what finished; that last call is not cut (cap it with max_tokens)."""
    max_seconds: float | None = None
    """Budget of wall-clock seconds from the start of the run (a resumed run keeps its start);
    when it runs out, as for max_ttc_tokens."""


DEFAULTS = PaCoReContext(
    rounds="low",
    temperature=1.0,
    top_p=1.0,
    max_tokens=None,
    extra_body=None,
    seed=42,
    compaction="reference",
    empty_references="template",
    drop_truncated=False,
    context_limit=None,
    on_context_overflow="error",
    min_success=0.5,
    max_ttc_tokens=None,
    max_seconds=None,
)
"""The reference's behaviour."""


def merge_context(
    base: PaCoReContext, override: PaCoReContext | dict[str, Any] | None
) -> PaCoReContext:
    """``base`` with every non-None field of ``override`` laid over it.

    Raises:
        TypeError: ``override`` names a setting that does not exist.
    """
    if override is None:
        return base
    if isinstance(override, dict):
        known = {f.name for f in fields(PaCoReContext)}
        if unknown := sorted(set(override) - known):
            raise TypeError(f"unknown PaCoRe setting(s): {', '.join(unknown)}")
        items: Iterable[tuple[str, Any]] = override.items()
    else:
        items = ((f.name, getattr(override, f.name)) for f in fields(override))
    return replace(base, **{k: v for k, v in items if v is not None})


def context_from_options(options: object) -> dict[str, Any]:
    """The `PaCoReContext` fields set (not None) on ``options``, e.g. an argparse namespace."""
    values = ((f.name, getattr(options, f.name, None)) for f in fields(PaCoReContext))
    return {name: value for name, value in values if value is not None}


__all__ = ["DEFAULTS", "PaCoReContext", "context_from_options", "merge_context"]
