"""Per-run settings (LangGraph ``context_schema``), layered over the graph's defaults."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field, SkipValidation

from pacore_graph.compaction import Compaction
from pacore_graph.rounds import RoundsSpec

INT64_MAX = 2**63 - 1
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]  # settings are checkpointed with msgpack
Positive = Annotated[int, Field(ge=1, le=INT64_MAX)]
Fraction = Annotated[float, Field(gt=0, le=1)]

RESERVED_BODY_KEYS: dict[str, str] = {
    "messages": "PaCoRe writes each call's messages",
    "model": "the model is the backend's (--model)",
    "n": "a trajectory is one completion: raise K in rounds instead",
    "stream": "the backend decides whether a call streams",
    "stream_options": "the backend asks for the token usage that budgets and the record count",
    "temperature": "use the temperature setting",
    "top_p": "use the top_p setting",
    "max_tokens": "use the max_tokens setting",
}
"""Request fields ``extra_body`` (merged over the request body) may not set, and why."""


def _no_reserved_keys(body: dict[str, Any]) -> dict[str, Any]:
    for key in body:
        if key in RESERVED_BODY_KEYS:
            raise ValueError(f"cannot set {key!r}: {RESERVED_BODY_KEYS[key]}")
    return body


def _schema_defaults(schema: dict[str, Any], cls: type[Any]) -> None:
    # A field's runtime default is None ("the graph's default"); the form shows `DEFAULTS`.
    for name, prop in schema.get("properties", {}).items():
        prop["default"] = getattr(DEFAULTS, name)


@dataclass(kw_only=True)
class PaCoReContext:
    """Settings of one run (``graph.invoke(x, context={"rounds": "low"})``, a form in
    Studio); a field left ``None`` takes the graph's default."""

    # Read by pydantic, which LangGraph uses for the context JSON schema; not a field.
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(json_schema_extra=_schema_defaults)

    # Checked by `resolve_rounds`, whose errors name the bound a vector is over.
    rounds: Annotated[
        SkipValidation[RoundsSpec | None],
        Field(
            description='Exploration rounds: a preset ("low" = 4, "medium" = 16, "high" = 32,4), '
            'an int, "32,4" or [32, 4]; the final synthesis round [1] is appended, unless '
            'the vector already ends in 1 as the paper writes it ("32,4,1").',
            examples=["low", "medium", "high", 8, "32,4"],
        ),
    ] = None
    temperature: Annotated[
        float | None,
        Field(ge=0, description="Sampling temperature of every call (reference: 1.0)."),
    ] = None
    top_p: Annotated[
        Fraction | None, Field(description="Nucleus sampling of every call (reference: 1.0).")
    ] = None
    max_tokens: Annotated[
        Positive | None,
        Field(
            description="Generation limit per call; empty leaves it to the server "
            "(the reference sent 131072).",
        ),
    ] = None
    extra_body: Annotated[
        Annotated[dict[str, Any], AfterValidator(_no_reserved_keys)] | None,
        Field(
            description="Extra request fields for OpenAI-compatible servers, e.g. vLLM's "
            '{"top_k": 20} or {"chat_template_kwargs": {"enable_thinking": true}}.'
        ),
    ] = None
    seed: Annotated[
        # Random(-n) shuffles as Random(n): a negative seed would be a second name for one order.
        Count | None,
        Field(
            description="Seed of the shuffle of each round's references "
            "(reference: 42, a fresh Random(seed) each round).",
        ),
    ] = None
    compaction: Annotated[
        # The names are `compaction.COMPACTIONS`; code may also pass a callable.
        Literal["reference", "boxed", "full"] | Compaction | None,
        Field(
            description='What later rounds see of a trajectory: "reference" (the text after '
            'the last </think>), "boxed" (only its final \\boxed{...}) or "full" (all of it, '
            "thinking included: the paper's no-compaction ablation); from code, also a "
            "callable str -> str."
        ),
    ] = None
    empty_references: Annotated[
        Literal["template", "problem"] | None,
        Field(
            description='When no reference is left: "template" renders P(x, []) as the '
            'reference code does; "problem" sends the plain problem as the paper describes.'
        ),
    ] = None
    drop_truncated: Annotated[
        bool | None,
        Field(
            description='Leave trajectories that hit max_tokens (finish_reason "length") '
            "out of the references."
        ),
    ] = None
    context_limit: Annotated[
        Positive | None,
        Field(description="Largest synthesis prompt in tokens; empty disables the check."),
    ] = None
    on_context_overflow: Annotated[
        Literal["error", "drop_longest"] | None,
        Field(
            description='Over context_limit: "error" stops with ContextLimitError before the '
            'call; "drop_longest" leaves out the longest references until the prompt fits.'
        ),
    ] = None
    min_success: Annotated[
        Count | Fraction | None,
        Field(
            description="Quorum of a round: an int is a count, a float in (0, 1] a fraction "
            "of K (rounded up). A round goes on when at least that many trajectories "
            "finished; below it the run stops with QuorumError, and resuming the thread "
            "retries the failed ones."
        ),
    ] = None
    max_ttc_tokens: Annotated[
        Positive | None,
        Field(
            description="Budget of completion tokens over all calls of the run; when it runs "
            "out the run skips to the final synthesis over what finished (that last call is "
            "not cut: cap it with max_tokens). Empty: no budget.",
        ),
    ] = None
    max_seconds: Annotated[
        float | None,
        Field(
            gt=0,
            description="Budget of wall-clock seconds from the start of the run (a resumed "
            "run keeps its start); when it runs out, as for max_ttc_tokens. Empty: no budget.",
        ),
    ] = None
    straggler_quantile: Annotated[
        Fraction | None,
        Field(
            description="Straggler control, q in (0, 1]: once this fraction of a round's K "
            "(at least its quorum) finished, wait at most max(straggler_factor x their median "
            "finish time, straggler_min_seconds) for the rest, then stop them (recorded "
            '"stopped") and go on to the next round. 1 (the default) waits for every '
            "trajectory, as the reference; the final round is never cut.",
        ),
    ] = None
    straggler_factor: Annotated[
        float | None,
        Field(
            ge=0,
            description="Straggler control, f >= 0: how many median finish times (from the "
            "round's start) the rest may take after straggler_quantile finished.",
        ),
    ] = None
    straggler_min_seconds: Annotated[
        float | None,
        Field(
            ge=0,
            description="Straggler control: the rest may always take at least this many "
            "seconds after straggler_quantile finished (a floor for rounds whose median is short).",
        ),
    ] = None
    review: Annotated[
        bool | None,
        Field(
            description="Pause (interrupt) after each exploration round with its references; "
            'resume with null or {} (keep them), {"references": [...]} or {"action": "finish"}.'
        ),
    ] = None
    max_k: Annotated[
        Positive | None,
        Field(
            description="Largest K of a round (the paper's largest is 32; the reference had "
            "no bound); a rounds vector above it stops with InvalidRoundsError before any "
            "call. A guard against typos such as 999999: raise it to run wider rounds.",
        ),
    ] = None
    max_trajectories: Annotated[
        Positive | None,
        Field(
            description="Largest number of trajectories of a run, all rounds together "
            "(the paper's high preset runs 37); above it, as for max_k.",
        ),
    ] = None
    max_input_chars: Annotated[
        Positive | None,
        Field(
            description="Largest input chat, in characters of text over all its messages "
            "(each of the K calls of a round sends it whole); above it the run stops with "
            "InvalidInputError before any call.",
        ),
    ] = None


DEFAULTS = PaCoReContext(
    rounds="low",
    temperature=1.0,
    top_p=1.0,
    seed=42,
    compaction="reference",
    empty_references="template",
    drop_truncated=False,
    on_context_overflow="error",
    min_success=0.5,
    straggler_quantile=1.0,  # off: wait for every trajectory, as the reference
    straggler_factor=2.0,
    straggler_min_seconds=10.0,
    review=False,
    # Not the reference's (it had no bounds): see the README's settings table.
    max_k=1024,
    max_trajectories=4096,
    max_input_chars=1_000_000,
)
"""The reference's behaviour and pacore-graph's bounds on a run; settings not named are None."""


def merge_context(
    base: PaCoReContext, override: PaCoReContext | dict[str, Any] | None
) -> PaCoReContext:
    """``base`` with every non-None field of ``override`` laid over it; TypeError when
    ``override`` names a setting that does not exist."""
    if override is None:
        return base
    values = override if isinstance(override, dict) else vars(override)
    known = {f.name for f in fields(PaCoReContext)}
    if unknown := sorted(set(values) - known):
        names = ", ".join(unknown)
        raise TypeError(f"unknown PaCoRe setting(s): {names}{did_you_mean(unknown, known)}")
    return replace(base, **{k: v for k, v in values.items() if v is not None})


def did_you_mean(words: Iterable[str], known: Iterable[str]) -> str:
    """``"; did you mean min_success?"``: the ``known`` names closest to ``words``, or ""."""
    close = [m for w in words for m in difflib.get_close_matches(w, list(known), 1)]
    return f"; did you mean {' or '.join(close)}?" if close else ""


def context_from_options(options: object) -> dict[str, Any]:
    """The `PaCoReContext` fields set (not None) on ``options``, e.g. an argparse namespace."""
    values = ((f.name, getattr(options, f.name, None)) for f in fields(PaCoReContext))
    return {name: value for name, value in values if value is not None}


__all__ = ["DEFAULTS", "PaCoReContext", "context_from_options", "did_you_mean", "merge_context"]
