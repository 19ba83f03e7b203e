"""What ``pacore solve`` and ``pacore eval`` share: the backend, sampling, PaCoRe, budget,
quorum and checkpoint options (one parent parser), opening the backend and the
checkpointer from them, and one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import openai
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver

from pacore_graph.backends.launch import backend_for_args
from pacore_graph.compaction import COMPACTIONS
from pacore_graph.errors import BudgetExhaustedError, PaCoReError, QuorumError
from pacore_graph.secrets import url_secrets


class CLIError(Exception):
    """A problem to report in one line, without a traceback."""


class Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line, like every other pacore error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pacore: error: {message} (see {self.prog} --help)\n")


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


def run_options() -> argparse.ArgumentParser:
    """The options every command that runs PaCoRe takes, as a parent parser."""
    p = argparse.ArgumentParser(add_help=False)
    backend = p.add_argument_group("backend")
    backend.add_argument(
        "--base-url",
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (for several "
        "replicas, a router such as vllm-router: docs/vllm.md)",
    )
    backend.add_argument(
        "--backend",
        choices=["openai", "embedded", "vllm"],
        help="openai: the --base-url endpoint (default when given); embedded: a small model "
        "on the CPU, started by pacore (default otherwise); vllm: vLLM's engine in-process",
    )
    backend.add_argument(
        "--model",
        help="model name (default: the endpoint's first model); a path for --backend vllm "
        "or a GGUF file for --backend embedded",
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
        type=int,
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
    store = p.add_argument_group("checkpoints and output")
    store.add_argument(
        "--redis-url",
        help="checkpoint runs in Redis (redis://HOST:PORT/DB); the same command resumes them",
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


@contextlib.asynccontextmanager
async def open_checkpointer(url: str | None) -> AsyncIterator[BaseCheckpointSaver | None]:
    """`AsyncRedisSaver` on ``url`` (checked reachable before any model call), or None."""
    if not url:
        yield None
        return
    from pacore_graph.checkpoints import AsyncRedisSaver

    async with AsyncRedisSaver.from_conn_string(url) as saver:
        try:
            await saver.asetup()
        except ConnectionError as exc:  # a setup problem, like a bad option: exit 2
            raise CLIError(str(exc)) from None
        yield saver


@contextlib.asynccontextmanager
async def open_run(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[BaseChatModel, BaseCheckpointSaver | None]]:
    """The backend and the checkpointer the options name, closed on exit."""
    async with open_checkpointer(args.redis_url) as saver:
        with backend_for_args(args) as model:
            yield model, saver


def secrets_of(args: argparse.Namespace) -> list[str]:
    """The secrets the options carry, to keep out of every message and log."""
    found = [args.api_key or "", os.environ.get("OPENAI_API_KEY", "")]
    found += url_secrets(args.base_url) + url_secrets(args.redis_url)
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
    if isinstance(exc, CLIError | PaCoReError | ImportError | ValueError):
        return 2
    return 1


__all__ = [
    "EXPECTED_ERRORS",
    "CLIError",
    "Parser",
    "describe",
    "exit_status",
    "open_checkpointer",
    "open_run",
    "run_options",
    "secrets_of",
]
