"""What ``pacore solve`` and ``pacore eval`` share: the backend, sampling, PaCoRe, budget,
quorum and checkpoint options (one parent parser), opening the backend and the
checkpointer from them, and one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import openai
import redis
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver

from pacore_graph.backends.launch import backend_for_args
from pacore_graph.compaction import COMPACTIONS
from pacore_graph.context import DEFAULTS
from pacore_graph.errors import BudgetExhaustedError, PaCoReError, QuorumError
from pacore_graph.rounds import PRESETS
from pacore_graph.secrets import url_secrets

ROUNDS_HELP = (
    f"the round vector: a preset ({'|'.join(PRESETS)}) or the exploration rounds N,N,..., "
    "to which the final round [1] is appended (32,4 runs [32, 4, 1]); a vector that "
    "already ends in 1, such as 32,4,1 as the paper writes it, runs as written"
)
"""``--rounds`` of ``pacore solve`` and ``pacore eval``."""


class CLIError(Exception):
    """A problem to report in one line, without a traceback; ``status`` is the exit status
    (2: fix the command; 1: the run failed)."""

    status = 2


class Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line, like every other pacore error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pacore: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _count_or_fraction(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)  # argparse reports a ValueError as "invalid value"


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)  # argparse reports a JSONDecodeError (a ValueError) as invalid
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


class StragglersAction(argparse.Action):
    """``--stragglers Q[,F[,S]]`` sets ``--straggler-quantile``, ``-factor`` and
    ``-min-seconds`` at once (those left out keep their defaults); ``off`` is quantile 1."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        text = str(values).strip()
        if text.lower() == "off":
            namespace.straggler_quantile = 1.0
            return
        parts = text.split(",")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if not 1 <= len(numbers) <= 3:
            raise argparse.ArgumentError(
                self, f"expected Q[,F[,SECONDS]] such as 0.75,2,10, or off; got {text!r}"
            )
        names = ("straggler_quantile", "straggler_factor", "straggler_min_seconds")
        for name, number in zip(names, numbers, strict=False):
            setattr(namespace, name, number)


def run_options() -> argparse.ArgumentParser:
    """The options every command that runs PaCoRe takes, as a parent parser."""
    p = argparse.ArgumentParser(add_help=False)
    backend = p.add_argument_group("backend")
    backend.add_argument(
        "--base-url",
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: "
        "$PACORE_BASE_URL, else $OPENAI_BASE_URL; for several replicas, a router such as "
        "vllm-router: docs/vllm.md)",
    )
    backend.add_argument(
        "--backend",
        choices=["openai", "embedded", "vllm"],
        help="openai: the --base-url endpoint (default when one is given or set in the "
        "environment); embedded: a small model on the CPU, started by pacore (default "
        "otherwise); vllm: vLLM's engine in-process",
    )
    backend.add_argument(
        "--model",
        help="model name (default: $PACORE_MODEL, else the endpoint's first model); a path "
        "for --backend vllm or a GGUF file for --backend embedded",
    )
    backend.add_argument(
        "--api-key", help="API key (default: the key in --base-url, else $OPENAI_API_KEY)"
    )
    backend.add_argument(
        "--timeout",
        type=float,
        help="deadline of each model call in seconds, first byte to last, streamed or not "
        "(default 7200: a 131k-token reasoning call takes over an hour); a call past it is "
        "retried. A stream that sends nothing for 600 s fails sooner",
    )
    backend.add_argument(
        "--concurrency",
        type=positive_int,
        default=64,
        help="model calls in flight at once (default 64, as the reference)",
    )
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    sampling.add_argument("--top-p", type=float, help="nucleus sampling (default 1.0)")
    sampling.add_argument("--max-tokens", type=int, help="tokens per call (default: server's)")
    sampling.add_argument(
        "--extra-body",
        type=_json_object,
        help="extra request fields as a JSON object, e.g. '{\"top_k\": 20}'",
    )
    pacore = p.add_argument_group("PaCoRe")
    pacore.add_argument("--seed", type=int, help="seed of the reference-order shuffle (default 42)")
    pacore.add_argument("--compaction", choices=sorted(COMPACTIONS), help="compaction rule")
    pacore.add_argument(
        "--empty-references",
        choices=["template", "problem"],
        help="when every trajectory failed: render the template (default) or send the problem",
    )
    pacore.add_argument(
        "--drop-truncated",
        action="store_true",
        default=None,
        help="leave trajectories cut at max tokens out of the next round",
    )
    pacore.add_argument("--context-limit", type=int, help="largest synthesis prompt, in tokens")
    pacore.add_argument(
        "--on-context-overflow",
        choices=["error", "drop_longest"],
        help="over --context-limit: stop (default) or leave out the longest references",
    )
    limits = p.add_argument_group("quorum and budgets")
    limits.add_argument(
        "--min-success",
        type=_count_or_fraction,
        help="quorum of each round: a count, or a fraction of K such as 0.5 (the default); "
        "0 goes on whatever fails, as the reference did",
    )
    limits.add_argument(
        "--max-ttc-tokens",
        type=int,
        help="token budget of a run; when it runs out the final synthesis uses what finished",
    )
    limits.add_argument(
        "--max-seconds",
        type=float,
        help="time budget of a run, in seconds; when it runs out, as --max-ttc-tokens",
    )
    stragglers = p.add_argument_group(
        "straggler control (off by default: every trajectory of a round is awaited)"
    )
    stragglers.add_argument(
        "--straggler-quantile",
        type=float,
        metavar="Q",
        help="once this fraction of a round (at least its quorum) finished, stop the rest "
        "after the wait below and go on to the next round; 1 is off (the default)",
    )
    stragglers.add_argument(
        "--straggler-factor",
        type=float,
        metavar="F",
        help=f"the wait: F x the median finish time of those finished (default "
        f"{DEFAULTS.straggler_factor:g}) ...",
    )
    stragglers.add_argument(
        "--straggler-min-seconds",
        type=float,
        metavar="SECONDS",
        help=f"... or at least this long (default {DEFAULTS.straggler_min_seconds:g})",
    )
    stragglers.add_argument(
        "--stragglers",
        action=StragglersAction,
        metavar="Q[,F[,SECONDS]]",
        help="the three at once, e.g. 0.75,2,10; 'off' waits for every trajectory",
    )
    bounds = p.add_argument_group("bounds (a run over one stops before any call)")
    bounds.add_argument(
        "--max-k",
        type=int,
        help=f"largest K of a round (default {DEFAULTS.max_k}; the paper's largest is 32)",
    )
    bounds.add_argument(
        "--max-trajectories",
        type=int,
        help=f"largest number of trajectories of a run (default {DEFAULTS.max_trajectories})",
    )
    bounds.add_argument(
        "--max-input-chars",
        type=int,
        help=f"largest input chat, in characters of text (default {DEFAULTS.max_input_chars:,})",
    )
    store = p.add_argument_group("checkpoints and output")
    store.add_argument(
        "--redis-url",
        help="checkpoint runs in Redis (redis://HOST:PORT/DB, or redis+cluster://HOST:PORT "
        "for a Cluster); the same command resumes them",
    )
    store.add_argument(
        "--allow-eviction",
        action="store_true",
        help="use a Redis whose maxmemory-policy may evict checkpoints (refused by default: "
        "evicted keys damage threads)",
    )
    store.add_argument(
        "--lease-ttl",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a run holds its Redis thread, renewing the hold every third of this; a "
        "crashed run's thread is free again this long after it died (default 10)",
    )
    store.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log to stderr at this level (API keys are redacted)",
    )
    store.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: when stderr is a terminal)",
    )
    return p


BASE_URL_VARIABLES = ("PACORE_BASE_URL", "OPENAI_BASE_URL")
"""Where ``--base-url`` comes from when it is not given, first set wins."""


def apply_env_defaults(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> None:
    """Fills ``--base-url`` from ``$PACORE_BASE_URL``/``$OPENAI_BASE_URL`` and ``--model``
    from ``$PACORE_MODEL`` where the command line left them out (flags win).

    Only for the OpenAI-compatible backend: an explicit ``--backend embedded``/``vllm``
    takes no endpoint, and ``$PACORE_MODEL`` names a model served at an endpoint, not a
    GGUF file or a model folder.
    """
    if args.backend not in (None, "openai"):
        return
    if not args.base_url:
        args.base_url = next(
            (url for name in BASE_URL_VARIABLES if (url := environ.get(name, "").strip())), None
        )
    if args.base_url and not args.model:
        args.model = environ.get("PACORE_MODEL", "").strip() or None


def backend_kind(args: argparse.Namespace) -> str:
    """The backend the options run on, as `open_backend` picks it."""
    return str(args.backend or ("openai" if args.base_url else "embedded"))


def public_url(url: str) -> str:
    """``url`` without what may be a secret: user and password, query and fragment
    (``http://u:p@host:8000/v1?key=k`` is ``http://host:8000/v1``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: keep nothing of it
        port = None
    netloc = host + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def backend_description(args: argparse.Namespace, model: BaseChatModel) -> dict[str, str | None]:
    """The backend a run uses: ``kind``, ``endpoint`` (no credentials) and ``model`` name."""
    url = getattr(model, "openai_api_base", None)
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return {
        "kind": backend_kind(args),
        "endpoint": public_url(url) if isinstance(url, str) and url else None,
        "model": str(name) if name else None,
    }


def backend_line(description: Mapping[str, str | None]) -> str:
    """``backend: openai http://host:8000/v1 model qwen3``."""
    words = [description["kind"], description["endpoint"]]
    if description["model"]:
        words += ["model", description["model"]]
    return "backend: " + " ".join(w for w in words if w)


@contextlib.asynccontextmanager
async def open_checkpointer(
    url: str | None, *, allow_eviction: bool = False, lease_ttl: float = 10.0
) -> AsyncIterator[BaseCheckpointSaver | None]:
    """`AsyncRedisSaver` on ``url``, or None. Before any model call it is checked reachable,
    the password accepted, and its ``maxmemory-policy`` one that keeps checkpoints (unless
    ``allow_eviction``); each run on it holds its thread with a lease of ``lease_ttl``."""
    if not url:
        yield None
        return
    from pacore_graph.checkpoints import AsyncRedisSaver

    if lease_ttl <= 0:
        raise CLIError(f"--lease-ttl must be positive seconds, not {lease_ttl:g}")
    async with AsyncRedisSaver.from_conn_string(url, lease_ttl=lease_ttl) as saver:
        try:
            await saver.asetup(allow_eviction=allow_eviction)
        except (OSError, ValueError) as exc:  # a setup problem, like a bad option: exit 2
            raise CLIError(str(exc)) from None
        yield saver


@contextlib.asynccontextmanager
async def open_run(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[BaseChatModel, BaseCheckpointSaver | None]]:
    """The backend and the checkpointer the options name, closed on exit."""
    async with open_checkpointer(
        args.redis_url, allow_eviction=args.allow_eviction, lease_ttl=args.lease_ttl
    ) as saver:
        with backend_for_args(args) as model:
            yield model, saver


def secrets_of(args: argparse.Namespace) -> list[str]:
    """The secrets the options carry, to keep out of every message and log."""
    found = [args.api_key or "", os.environ.get("OPENAI_API_KEY", "")]
    for url in [args.redis_url, args.base_url, *(os.environ.get(n) for n in BASE_URL_VARIABLES)]:
        found += url_secrets(url)
    return [s for s in found if s]


def describe(exc: BaseException, saved: bool) -> str:
    """One line for a failure; ``saved``: finished work is checkpointed and a rerun resumes."""
    resume = "; finished work is checkpointed: rerun the same command to resume"
    if isinstance(exc, openai.APIConnectionError):
        text = f"cannot reach the model endpoint: {exc.__cause__ or exc}"
    elif isinstance(exc, openai.APIStatusError):
        text = f"the model endpoint answered {exc.status_code}: {exc.message}"
    else:
        text = str(exc) or type(exc).__name__
    if saved and isinstance(exc, redis.exceptions.RedisError):  # Redis itself failed
        return text + (
            "; work saved before this is kept only if Redis kept its data: rerun the same "
            "command to resume once Redis is back"
        )
    resumable = isinstance(exc, QuorumError | BudgetExhaustedError | openai.OpenAIError) or (
        isinstance(exc, ConnectionError) and not isinstance(exc, PaCoReError)
    )
    return text + resume if saved and resumable else text


EXPECTED_ERRORS = (
    CLIError,
    PaCoReError,
    openai.OpenAIError,
    ConnectionError,
    OSError,
    TypeError,
    ValueError,
    ImportError,
)
"""Failures reported as such in one line; anything else is a bug ("unexpected ...")."""


def exit_status(exc: BaseException) -> int:
    """2 for what the user can fix in the command; 1 for a failing backend or Redis."""
    if isinstance(exc, QuorumError | BudgetExhaustedError):
        return 1
    if isinstance(exc, CLIError):
        return exc.status
    if isinstance(exc, PaCoReError | ImportError | ValueError):
        return 2
    return 1


__all__ = [
    "BASE_URL_VARIABLES",
    "EXPECTED_ERRORS",
    "ROUNDS_HELP",
    "CLIError",
    "Parser",
    "StragglersAction",
    "apply_env_defaults",
    "backend_description",
    "backend_kind",
    "backend_line",
    "describe",
    "exit_status",
    "open_checkpointer",
    "open_run",
    "positive_int",
    "public_url",
    "run_options",
    "secrets_of",
]
