"""``pacore serve``: PaCoRe as an OpenAI-compatible endpoint (docs/serve.md).

    pacore serve --base-url http://127.0.0.1:8000/v1 --model pacore-8b \\
        --redis-url redis://127.0.0.1:6379/0 --port 8100

The backend, sampling, PaCoRe, quorum and budget options are ``pacore solve``'s; their
values are the defaults of every run, which a request's fields and ``pacore`` object
override. ``--concurrency`` bounds the model calls in flight over all runs together.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pacore_graph.cli.options import (
    PORT,
    CLIError,
    add_command,
    backend_line,
    log_to_stderr,
    public_url,
)
from pacore_graph.context import context_from_options
from pacore_graph.rounds import resolve_rounds
from pacore_graph.secrets import REDACTED, RedactingFilter, model_secrets, redact
from pacore_graph.server.auth import KEYS_ENV, ApiKeys
from pacore_graph.server.settings import ServeSettings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from pacore_graph.server.app import Service


def add_parser(sub: Any) -> None:
    """Registers ``pacore serve`` on the ``pacore`` subcommands."""
    about = "serve PaCoRe as an OpenAI-compatible endpoint"
    serve = add_command(sub, "serve", about, __doc__, rounds="of the model 'pacore'")
    http = serve.add_argument_group("server")
    http.add_argument("--host", default="127.0.0.1", help="address to bind")
    http.add_argument("--port", type=PORT, default=ServeSettings.port, help="port to listen on")
    http.add_argument(
        "--api-keys-file",
        metavar="FILE",
        help=f"accept only these keys (one per line) as 'Authorization: Bearer KEY' "
        f"(default: ${KEYS_ENV}, comma-separated; unset: no authentication)",
    )
    for option, name, text in (
        ("--max-runs", "max_runs", "runs at once (n choices count n); then 429 with Retry-After"),
        ("--max-body-bytes", "max_body_bytes", "larger request bodies get 413"),
        ("--max-n", "max_n", "most choices (n) of one request"),
        ("--keepalive", "keepalive_s", "an SSE comment goes out on a stream this often"),
        ("--thread-ttl", "thread_ttl_s", "a thread stays in Redis this long (0: forever)"),
    ):  # ServeSettings fields
        default = getattr(ServeSettings, name)
        seconds = "SECONDS" if name.endswith("_s") else None
        http.add_argument(option, type=type(default), default=default, metavar=seconds, help=text)
    http.add_argument(
        "--cancel-on-disconnect",
        action="store_true",
        help="cancel a run when its last client hangs up (default: it runs on; a retry with "
        "the same Idempotency-Key gets its answer)",
    )


def serve_settings(args: argparse.Namespace, secrets: list[str]) -> ServeSettings:
    """The server's settings from the command line; OSError or ValueError for a bad keys
    file or limit."""
    if args.api_keys_file:
        keys = ApiKeys.from_file(args.api_keys_file)
    else:
        keys = ApiKeys.parse(os.environ.get(KEYS_ENV, ""))
    return ServeSettings(
        host=args.host,
        port=args.port,
        api_keys=keys,
        redis_url=args.redis_url,
        thread_ttl_s=args.thread_ttl or None,
        saver_options={"lease_ttl": args.lease_ttl},
        max_runs=args.max_runs,
        concurrency=args.concurrency,
        max_body_bytes=args.max_body_bytes,
        # The run bound --max-trajectories also bounds a request (all its n runs).
        max_trajectories=args.max_trajectories or ServeSettings.max_trajectories,
        max_n=args.max_n,
        keepalive_s=args.keepalive,
        cancel_on_disconnect=args.cancel_on_disconnect,
        freeze_gc=True,  # this process is the server's alone
        secrets=secrets,
    )


@contextlib.contextmanager
def open_service(
    args: argparse.Namespace, settings: ServeSettings
) -> Iterator[tuple[Service, BaseChatModel]]:
    """The backend the options name and a `Service` running PaCoRe on it with the options'
    settings as defaults, closed on exit; a bad ``--rounds`` fails before the backend starts."""
    from pacore_graph.backends.launch import open_backend
    from pacore_graph.graph import create_pacore_graph
    from pacore_graph.server.app import Service

    resolve_rounds(args.rounds)
    with open_backend(
        args.backend,
        args.base_url,
        args.model,
        args.api_key,
        args.timeout,
        max_concurrent_requests=args.concurrency,
    ) as backend:
        settings.secrets += model_secrets(backend.model)
        run_defaults = context_from_options(args)  # --rounds among them
        if run_defaults.get("max_tokens") is None and backend.default_max_tokens:
            run_defaults["max_tokens"] = backend.default_max_tokens
        graph = create_pacore_graph(backend.model, **run_defaults)
        yield Service(settings, graph.compile()), backend.model


class AccessLogFilter(RedactingFilter):
    """uvicorn's access log without keys: secrets out of each path, and the query string
    (where clients put ``?api_key=...``; the server reads none) redacted whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's AccessFormatter unpacks the five args: keep their shape.
        if isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, version, status = record.args
            path, query, _ = str(path).partition("?")
            path = redact(path, self.secrets) + (f"?{REDACTED}" if query else "")
            record.args = (client, method, path, version, status)
        return True


def _check_redis(url: str) -> None:
    """Fails in one line, before the server starts, when Redis does not answer."""
    import redis

    from pacore_graph.checkpoints import connect

    try:
        with connect(url, socket_connect_timeout=5, socket_timeout=5) as client:  # closed on exit
            client.ping()
    except (redis.RedisError, OSError) as exc:
        raise CLIError(f"Redis at {url} is unreachable: {exc}") from None


def main(args: argparse.Namespace, secrets: list[str]) -> int:
    """Runs the server until SIGINT or SIGTERM; errors reach ``pacore``'s main."""
    level = args.log_level or "INFO"
    log_to_stderr(level, secrets, format="%(levelname)s: %(message)s")
    from pacore_graph.server.app import Server  # the server extra

    settings = serve_settings(args, secrets)
    if args.host not in ("127.0.0.1", "::1", "localhost") and not settings.api_keys:
        print(
            f"pacore serve: warning: listening on {args.host} without API keys "
            f"(--api-keys-file or ${KEYS_ENV})",
            file=sys.stderr,
        )
    if args.redis_url:
        _check_redis(args.redis_url)
    with open_service(args, settings) as (service, model):
        server = Server(
            service, host=args.host, port=args.port, log_level=level.lower(), lifespan="on"
        )
        # uvicorn's loggers print through handlers of their own.
        logging.getLogger("uvicorn.error").addFilter(RedactingFilter(settings.secrets))
        logging.getLogger("uvicorn.access").addFilter(AccessLogFilter(settings.secrets))
        print(
            f"pacore serve: {backend_line(args, model)}; "
            f"OpenAI API at http://{args.host}:{args.port}/v1"
            + (f", runs durable in {public_url(args.redis_url)}" if args.redis_url else ""),
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        return 0 if server.started else 1


__all__ = ["AccessLogFilter", "add_parser", "main", "open_service", "serve_settings"]
