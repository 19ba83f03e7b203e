"""``pacore mcp``: PaCoRe as a Model Context Protocol tool over stdio (docs/mcp.md).

    pacore mcp --base-url http://127.0.0.1:8000/v1 --rounds medium \\
        --redis-url redis://127.0.0.1:6379/0

The backend, sampling, PaCoRe, quorum and budget options are ``pacore solve``'s; their
values are the defaults of every call. Stdout carries the protocol; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from pacore_graph.cli.options import add_command, log_to_stderr
from pacore_graph.cli.serve import open_service
from pacore_graph.server.settings import ServeSettings


def add_parser(sub: Any) -> None:
    """Registers ``pacore mcp`` on the ``pacore`` subcommands."""
    about = "serve PaCoRe as an MCP tool over stdio"
    add_command(sub, "mcp", about, __doc__ or "", rounds="of a call that gives none")


def main(args: argparse.Namespace, secrets: list[str]) -> int:
    """Serves the tool on stdin/stdout until the client closes stdin; the exit status."""
    log_to_stderr(args.log_level or "WARNING", secrets)
    try:
        from pacore_graph.server.mcp import create_mcp_server  # the mcp extra

        settings = ServeSettings(
            redis_url=args.redis_url,
            saver_options={"lease_ttl": args.lease_ttl},
            concurrency=args.concurrency,
            freeze_gc=True,  # this process is the server's alone
            secrets=secrets,
        )
        with open_service(args, settings) as (service, _):

            async def serve() -> None:
                async with service.running():
                    await create_mcp_server(service).run_stdio_async()

            asyncio.run(serve())
        return 0
    except KeyboardInterrupt:
        return 130


__all__ = ["add_parser", "main"]
