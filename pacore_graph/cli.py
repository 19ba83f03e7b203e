"""``pacore``: run PaCoRe from a shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai
from langchain_core.messages import BaseMessage, convert_to_messages

from pacore_graph.backends import ChatOpenAICompatible
from pacore_graph.compaction import COMPACTIONS
from pacore_graph.errors import BackendUnreachableError, InvalidInputError, PaCoReError
from pacore_graph.graph import create_pacore_graph
from pacore_graph.record import to_record
from pacore_graph.rounds import PRESETS, resolve_rounds
from pacore_graph.template import last_user_index


class CLIError(Exception):
    """A problem to report in one line, without a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    solve = sub.add_parser("solve", help="answer one problem with PaCoRe")
    solve.add_argument("problem", nargs="?", help="the problem (the last user message)")
    solve.add_argument("--messages", type=Path, help='JSON file: [{"role": ..., "content": ...}]')
    solve.add_argument(
        "--rounds",
        default="low",
        help=f"exploration rounds: {'|'.join(PRESETS)} or N,N,... ([1] is appended; default low)",
    )
    solve.add_argument(
        "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"
    )
    solve.add_argument("--model", help="model name (default: the endpoint's first model)")
    solve.add_argument("--api-key", help="API key (default: $OPENAI_API_KEY)")
    solve.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    solve.add_argument("--top-p", type=float, help="nucleus sampling (default 1.0)")
    solve.add_argument("--max-tokens", type=int, help="tokens per call (default: server's limit)")
    solve.add_argument("--seed", type=int, help="seed of the reference-order shuffle (default 42)")
    solve.add_argument("--compaction", choices=sorted(COMPACTIONS), help="compaction rule")
    solve.add_argument(
        "--empty-references",
        choices=["template", "problem"],
        help="when every trajectory failed: render the template (default) or send the problem",
    )
    solve.add_argument(
        "--drop-truncated",
        action="store_true",
        default=None,
        help="leave trajectories cut at max tokens out of the next round",
    )
    solve.add_argument("--context-limit", type=int, help="largest synthesis prompt, in tokens")
    solve.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="model calls in flight at once (default 64, as the reference)",
    )
    solve.add_argument("--timeout", type=float, default=None, help="seconds per model call")
    solve.add_argument("--json", action="store_true", help="print the full record as JSON")
    return parser


def _messages(args: argparse.Namespace) -> list[BaseMessage]:
    raw: list[Any] = []
    if args.messages is not None:
        try:
            raw = json.loads(args.messages.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CLIError(f"cannot read messages file {args.messages}: {exc}") from None
        if not isinstance(raw, list) or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in raw
        ):
            raise CLIError(
                f'{args.messages}: expected a JSON list of {{"role", "content"}} objects'
            )
    if args.problem is not None:
        raw.append({"role": "user", "content": args.problem})
    if not raw:
        raise CLIError("no problem given: pass PROBLEM or --messages FILE.json")
    try:
        messages = convert_to_messages(raw)
    except (ValueError, NotImplementedError) as exc:
        raise CLIError(f"bad messages: {exc}") from None
    last_user_index(messages)  # no usable problem fails before the endpoint is probed
    return messages


def _model(args: argparse.Namespace) -> ChatOpenAICompatible:
    if not args.base_url:
        raise CLIError("no --base-url given: point pacore at an OpenAI-compatible endpoint")
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    probe = ChatOpenAICompatible(
        base_url=args.base_url, model=args.model or "", api_key=api_key, timeout=10
    )
    # Fail in one line before any work when nothing listens there.
    served = probe.list_models()
    model = args.model or (served[0] if served else None)
    if not model:
        raise CLIError(f"{args.base_url} serves no model: pass --model")
    return ChatOpenAICompatible(
        base_url=args.base_url, model=model, api_key=api_key, timeout=args.timeout
    )


def _context(args: argparse.Namespace) -> dict[str, Any]:
    context = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "compaction": args.compaction,
        "empty_references": args.empty_references,
        "drop_truncated": args.drop_truncated,
        "context_limit": args.context_limit,
    }
    return {k: v for k, v in context.items() if v is not None}


async def _solve(args: argparse.Namespace) -> int:
    resolve_rounds(args.rounds)  # a bad vector fails before the endpoint is probed
    messages = _messages(args)
    model = _model(args)
    graph = create_pacore_graph(model, rounds=args.rounds).compile()
    state = await graph.ainvoke(
        {"messages": messages},
        config={"max_concurrency": args.concurrency},
        context=_context(args),
    )
    if args.json:
        print(json.dumps(to_record(state), ensure_ascii=False, indent=2))
    else:
        print(state["messages"][-1].content)
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach the model endpoint: {exc.__cause__ or exc}"
    if isinstance(exc, openai.APIStatusError):
        return f"the model endpoint answered {exc.status_code}: {exc.message}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pacore`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_solve(args))
    except (CLIError, PaCoReError, InvalidInputError, BackendUnreachableError) as exc:
        print(f"pacore: error: {exc}", file=sys.stderr)
        return 2
    except (openai.OpenAIError, TypeError, ValueError) as exc:
        print(f"pacore: error: {_describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pacore: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
