"""PaCoRe behind a small web endpoint (FastAPI), checkpointed in Redis so a restart resumes.

    REDIS_URL=redis://127.0.0.1:6379/0 python examples/web_app.py --port 8080
    curl -s localhost:8080/solve -d '{"problem": "What is 17*23?", "thread_id": "t1"}' \\
         -H 'content-type: application/json'

POST the same thread id again after a crash or restart: finished trajectories are
not recomputed, and a finished thread returns its stored answer at once.

Bad input (rounds, settings, messages, a malformed body) is answered 422 with
``{"detail": "<one line>"}`` before any model call; a thread busy with another question,
or being run by another request or process, 409; a run the backend failed (too few
trajectories finished) 502, and POSTing the same request again resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from pacore_graph import create_pacore_graph, model_from_env, to_record
from pacore_graph.context import DEFAULTS, merge_context
from pacore_graph.errors import (
    ContextLimitError,
    InvalidInputError,
    PaCoReError,
    ThreadBusyError,
    ThreadConflictError,
)
from pacore_graph.messages import last_user_index
from pacore_graph.threads import arun_thread
from pacore_graph.validation import check_input, check_settings


class SolveRequest(BaseModel):
    problem: str | None = None
    """The problem, sent as the user message; or give ``messages``."""
    messages: list[dict[str, Any]] | None = None
    """A chat (``[{"role": ..., "content": ...}]``) whose last user message is the problem."""
    thread_id: str | None = None
    rounds: str | int | list[int] | None = None
    max_tokens: int | None = 256
    settings: dict[str, Any] | None = None
    """More run settings (`PaCoReContext` fields), e.g. ``{"temperature": 0.6}``."""


class SolveResponse(BaseModel):
    thread_id: str
    status: str
    answer: str
    ttc_tokens: int


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        if url := os.environ.get("REDIS_URL"):
            from pacore_graph.checkpoints import AsyncRedisSaver

            saver = await stack.enter_async_context(AsyncRedisSaver.from_conn_string(url))
        else:
            saver = InMemorySaver()  # a restart forgets everything: set REDIS_URL
        model = stack.enter_context(model_from_env())
        app.state.graph = create_pacore_graph(model).compile(checkpointer=saver)
        yield


app = FastAPI(title="PaCoRe", lifespan=lifespan)


def one_line(text: str) -> str:
    """The first line of an error message: what an HTTP client shows."""
    return (text.strip().splitlines() or [""])[0]


@app.exception_handler(RequestValidationError)
async def malformed_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that is not JSON or has a field of the wrong type: 422, in one line."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc'][1:]) or 'body'}: {error['msg']}"
        for error in exc.errors()
    ]
    return JSONResponse({"detail": one_line("; ".join(problems))}, status_code=422)


@app.exception_handler(PaCoReError)
async def pacore_error(request: Request, exc: PaCoReError) -> JSONResponse:
    """pacore's errors in one line: bad input 422 (also a prompt over the context limit), a
    thread busy with another question or another run 409, anything else (the backend failed
    the run) 502."""
    if isinstance(exc, ThreadConflictError | ThreadBusyError):
        status = 409
    elif isinstance(exc, ValueError | ContextLimitError):
        status = 422
    else:
        status = 502
    return JSONResponse({"detail": one_line(str(exc))}, status_code=status)


def run_input(request: SolveRequest) -> tuple[list[BaseMessage], dict[str, Any]]:
    """The request's messages and run settings, checked as the graph checks them, so bad
    input fails before a thread is touched.

    Raises:
        InvalidInputError: No problem, or both a problem and messages, bad messages, or
            more text than max_input_chars.
        InvalidRoundsError: Bad rounds, or over max_k or max_trajectories.
        InvalidSettingsError: A setting with an impossible value.
    """
    if (request.problem is None) == (request.messages is None):
        raise InvalidInputError("give either problem or messages")
    if request.problem is not None:
        if not request.problem.strip():
            raise InvalidInputError("problem is empty")
        messages: list[BaseMessage] = [HumanMessage(request.problem)]
    else:
        try:
            messages = convert_to_messages(request.messages or [])
        except (ValueError, NotImplementedError) as exc:
            raise InvalidInputError(f"bad messages: {one_line(str(exc))}") from None
    last_user_index(messages)
    given = {"rounds": request.rounds, "max_tokens": request.max_tokens}
    context = {**(request.settings or {}), **{k: v for k, v in given.items() if v is not None}}
    try:
        settings = merge_context(DEFAULTS, context)
    except TypeError as exc:  # an unknown setting
        raise HTTPException(422, one_line(str(exc))) from None
    check_settings(settings)  # bounds of K and of the run included
    check_input(messages, settings)
    return messages, context


@app.post("/solve")
async def solve(request: SolveRequest) -> SolveResponse:
    """Solves a problem on a thread: starts, resumes or returns the stored answer."""
    messages, context = run_input(request)
    thread_id = request.thread_id or uuid.uuid4().hex
    status, state = await arun_thread(
        app.state.graph,
        {"messages": messages},
        {"configurable": {"thread_id": thread_id}},
        context=context,
    )
    record = to_record(state)
    return SolveResponse(
        thread_id=thread_id, status=status, answer=record["answer"], ttc_tokens=record["ttc_tokens"]
    )


@app.get("/threads/{thread_id}")
async def thread(thread_id: str) -> dict:
    """What the checkpoint holds for a thread."""
    snapshot = await app.state.graph.aget_state({"configurable": {"thread_id": thread_id}})
    if not snapshot.values:
        raise HTTPException(404, f"no thread {thread_id}")
    values = snapshot.values
    return {
        "thread_id": thread_id,
        "pending": list(snapshot.next),
        "trajectories": len(values.get("trajectories", [])),
        "answer": values["messages"][-1].content if not snapshot.next else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="PaCoRe web endpoint")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
