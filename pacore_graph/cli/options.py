"""What the ``pacore`` subcommands share: the run options (one parent parser), opening the
backend and the checkpointer from them, and one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Literal, NoReturn, get_args, get_origin
from urllib.parse import urlsplit

import openai
import redis
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import ConfigDict, Field, TypeAdapter

from pacore_graph.backends.embedded import EmbeddedBackendUnavailable
from pacore_graph.backends.launch import backend_for_args
from pacore_graph.context import DEFAULTS, did_you_mean
from pacore_graph.errors import BudgetExhaustedError, PaCoReError, QuorumError
from pacore_graph.retry import describe_failure
from pacore_graph.rounds import PRESETS
from pacore_graph.secrets import RedactingFilter, redact, url_credentials, url_secrets
from pacore_graph.validation import CONTEXT, rule

ROUNDS_HELP = (
    f"the round vector: a preset ({'|'.join(PRESETS)}) or the exploration rounds N,N,..., "
    "to which the final round [1] is appended (32,4 runs [32, 4, 1]); a vector that "
    "already ends in 1, such as 32,4,1 as the paper writes it, runs as written"
)


class CLIError(Exception):
    """A problem reported in one line; ``status``: 2 to fix the command, 1 a failed run."""

    status = 2


class Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line, with the option an unknown one may have meant."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):  # the root parser's, for all
            subs = [a.choices for a in self._actions if isinstance(a.choices, dict)]
            parsers = [self, *(p for choices in subs for p in choices.values())]
            known = [o for p in parsers for a in p._actions for o in a.option_strings]
            given = [w.split("=")[0] for w in message.split()[2:] if w.startswith("--")]
            message += did_you_mean(given, known)
        self.exit(2, f"pacore: error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (examples keep their lines) and each option's default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text, default = action.help or "", action.default
        if "default" in text or default in (None, [], argparse.SUPPRESS) or default is False:
            return text
        return text + " (default %(default)s)"


def checked(kind: Any, parse: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse type: ``parse`` of the text, checked against the pydantic constraints of
    ``kind`` and refused in the words of the settings checks."""
    adapter = TypeAdapter(kind, config=ConfigDict(strict=True, allow_inf_nan=False))

    def convert(text: str) -> Any:
        try:
            return adapter.validate_python(parse(text))
        except ValueError:  # a ValidationError too
            raise argparse.ArgumentTypeError(f"must be {rule(kind)}, got {text!r}") from None

    return convert


SECONDS = checked(Annotated[float, Field(gt=0)])
COUNT = checked(Annotated[int, Field(ge=1)], int)
PORT = checked(Annotated[int, Field(ge=1, le=65535)], int)


def url_option(text: str) -> str:
    """An argparse type: a URL whose port, if it names one, is in [1, 65535]."""
    with contextlib.suppress(ValueError):  # a port that is no number in [0, 65535]
        if urlsplit(text).port != 0:
            return text
    raise argparse.ArgumentTypeError("its port must be an integer in [1, 65535]")


def _count_or_fraction(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)  # argparse reports a ValueError as "invalid value"


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
        try:
            numbers = [1.0] if text.lower() == "off" else [float(p) for p in text.split(",")]
        except ValueError:
            numbers = []
        if not 1 <= len(numbers) <= 3:
            raise argparse.ArgumentError(
                self, f"expected Q[,F[,SECONDS]] such as 0.75,2,10, or off; got {text!r}"
            )
        names = ("straggler_quantile", "straggler_factor", "straggler_min_seconds")
        vars(namespace).update(zip(names, numbers, strict=False))


SETTING_GROUPS = {
    "sampling": "temperature top_p max_tokens extra_body",
    "PaCoRe": "seed compaction empty_references drop_truncated context_limit on_context_overflow",
    "quorum and budgets": "min_success max_ttc_tokens max_seconds",
    "straggler control (off by default: every trajectory of a round is awaited)": (
        "straggler_quantile straggler_factor straggler_min_seconds"
    ),
    "bounds (a run over one stops before any call)": "max_k max_trajectories max_input_chars",
}
"""The `PaCoReContext` fields every command takes as options, by help group."""

_PARSERS: dict[str, Callable[[str], Any]] = {
    "extra_body": json.loads,  # a JSON value other than an object is refused by the checks
    "min_success": _count_or_fraction,
}


def _add_setting(group: Any, name: str) -> None:
    kind, info = get_args(CONTEXT.hints[name])[:2]
    members = [get_args(m)[0] if get_origin(m) is Annotated else m for m in get_args(kind)]
    choices = next((get_args(m) for m in members if get_origin(m) is Literal), None)
    default = getattr(DEFAULTS, name)
    options: dict[str, Any] = {
        "help": (
            info.description + ("" if default in (None, False) else f" (default {default})")
        ).replace("%", "%%")  # argparse formats help with %
    }
    if choices:
        options["choices"] = choices
    elif members[0] is bool:
        options.update(action="store_true", default=None)
    else:
        options["type"] = _PARSERS.get(name, members[0])
    group.add_argument("--" + name.replace("_", "-"), **options)


def run_options() -> argparse.ArgumentParser:
    """The options every command that runs PaCoRe takes, as a parent parser."""
    p = argparse.ArgumentParser(add_help=False)
    backend = p.add_argument_group("backend")
    backend.add_argument(
        "--base-url",
        type=url_option,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: "
        "$PACORE_BASE_URL, else $OPENAI_BASE_URL; for several replicas, a router such as "
        "vllm-router: docs/vllm.md)",
    )
    backend.add_argument(
        "--backend",
        choices=["openai", "embedded", "vllm"],
        help="openai: the --base-url endpoint (default when one is set); embedded: a small "
        "CPU model pacore starts (default otherwise); vllm: vLLM's engine in-process",
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
        type=SECONDS,
        help="deadline of each model call in seconds, first byte to last, streamed or not "
        "(default 7200: a 131k-token reasoning call takes over an hour); a call past it is "
        "retried. A stream that sends nothing for 600 s fails sooner",
    )
    backend.add_argument("--concurrency", type=COUNT, default=64, help="calls in flight at once")
    for title, names in SETTING_GROUPS.items():
        group = p.add_argument_group(title)
        for name in names.split():
            _add_setting(group, name)
        if names.startswith("straggler"):
            group.add_argument(
                "--stragglers",
                action=StragglersAction,
                metavar="Q[,F[,SECONDS]]",
                help="the three at once, e.g. 0.75,2,10; 'off' waits for every trajectory",
            )
    store = p.add_argument_group("checkpoints and output")
    store.add_argument(
        "--redis-url",
        type=url_option,
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
        type=SECONDS,
        default=10.0,
        metavar="SECONDS",
        help="a run holds its Redis thread, renewing the hold every third of this; a "
        "crashed run's thread is free again this long after it died",
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


def add_command(
    sub: Any, name: str, help: str, description: str, rounds: str | None = None
) -> argparse.ArgumentParser:
    """Adds the subcommand ``name`` taking `run_options` (and ``--rounds``, whose help ends in
    ``rounds``), its ``description`` shown as written but for reST's double backquotes."""
    parser = sub.add_parser(
        name,
        parents=[run_options()],
        help=help,
        description=description.replace("``", ""),
        formatter_class=HelpFormatter,
    )
    if rounds is not None:
        parser.add_argument(
            "--rounds", default="low", help=ROUNDS_HELP + (rounds and f" ({rounds})")
        )
    return parser


BASE_URL_VARIABLES = ("PACORE_BASE_URL", "OPENAI_BASE_URL")


def apply_env_defaults(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> None:
    """Fills ``--base-url`` (`BASE_URL_VARIABLES`) and ``--model`` (``$PACORE_MODEL``) from
    the environment where the command left them out, for the OpenAI-compatible backend only."""
    if args.backend not in (None, "openai"):
        return
    if not args.base_url:
        args.base_url = next(
            (url for name in BASE_URL_VARIABLES if (url := environ.get(name, "").strip())), None
        )
    if args.base_url and not args.model:
        args.model = environ.get("PACORE_MODEL", "").strip() or None


def public_url(url: str) -> str:
    """``url`` without user, password, query and fragment, which may hold secrets."""
    return url_credentials(url)[0].partition("#")[0]


def backend_description(args: argparse.Namespace, model: BaseChatModel) -> dict[str, str | None]:
    """The backend a run uses: ``kind``, ``endpoint`` (no credentials) and ``model`` name."""
    url = getattr(model, "openai_api_base", None)
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return {
        "kind": str(args.backend or ("openai" if args.base_url else "embedded")),
        "endpoint": public_url(url) if isinstance(url, str) and url else None,
        "model": str(name) if name else None,
    }


def backend_line(args: argparse.Namespace, model: BaseChatModel) -> str:
    """``backend: openai http://host:8000/v1 model qwen3``."""
    backend = backend_description(args, model)
    words = [backend["kind"], backend["endpoint"]]
    if backend["model"]:
        words += ["model", backend["model"]]
    return "backend: " + " ".join(w for w in words if w)


@contextlib.asynccontextmanager
async def open_run(
    args: argparse.Namespace,
) -> AsyncIterator[tuple[BaseChatModel, BaseCheckpointSaver | None]]:
    """The backend and the checkpointer (None without ``--redis-url``) the options name,
    closed on exit; Redis is checked (reachable, keeping its keys) before any model call."""
    if not args.redis_url:
        with backend_for_args(args) as model:
            yield model, None
        return
    from pacore_graph.checkpoints import AsyncRedisSaver

    async with AsyncRedisSaver.from_conn_string(args.redis_url, lease_ttl=args.lease_ttl) as saver:
        try:
            await saver.asetup(allow_eviction=args.allow_eviction)
        except (OSError, ValueError) as exc:  # a setup problem, like a bad option: exit 2
            raise CLIError(str(exc)) from None
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
        url = public_url(str(exc.request.url))
        hint = "; does --base-url lack /v1?" if exc.status_code == 404 and "/v1" not in url else ""
        text = f"{url} answered {describe_failure(exc)}{hint}"
    elif isinstance(exc, ModuleNotFoundError) and (top := str(exc.name).split(".")[0]) in EXTRAS:
        text = f"{top} is not installed: pip install 'pacore-graph[{EXTRAS[top]}]'"
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


SERVER = ("uvicorn", "starlette", "sse_starlette", "prometheus_client")
EXTRAS = {**dict.fromkeys(SERVER, "server"), "mcp": "mcp"}
"""The extra of each optional library a command imports."""


EXPECTED_ERRORS = (
    CLIError,
    EmbeddedBackendUnavailable,
    PaCoReError,
    openai.OpenAIError,
    redis.exceptions.RedisError,
    OSError,  # ConnectionError too
    TypeError,
    ValueError,
    ImportError,
)
"""Failures reported as such in one line; anything else is a bug ("unexpected ...")."""


def exit_status(exc: BaseException) -> int:
    """2 for what the user can fix in the command; 1 for a failing backend or Redis."""
    if isinstance(exc, CLIError):
        return exc.status
    fixable = isinstance(exc, PaCoReError | ImportError | ValueError)
    return 2 if fixable and not isinstance(exc, QuorumError | BudgetExhaustedError) else 1


def log_to_stderr(level: str, secrets: list[str], **options: Any) -> None:
    """Logs at ``level`` to stderr with ``secrets`` redacted (``options``: `basicConfig`'s)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    logging.basicConfig(level=level, handlers=[handler], **options)


def report(exc: BaseException, secrets: list[str], saved: bool = False) -> int:
    """Prints the one line for a failure (`describe`); returns the exit status. One not in
    `EXPECTED_ERRORS` is a bug: ``unexpected ...``, its traceback in the debug log."""
    if not isinstance(exc, EXPECTED_ERRORS):
        logging.getLogger("pacore").debug("unexpected error", exc_info=exc)
        what = f"unexpected {type(exc).__name__}: {exc} (--log-level DEBUG shows where)"
        exc = RuntimeError(what)  # exit status 1
    message = redact(describe(exc, saved), secrets).splitlines()[0]
    print(f"pacore: error: {message}", file=sys.stderr)
    return exit_status(exc)
