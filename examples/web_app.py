"""PaCoRe behind a small web endpoint (FastAPI), checkpointed in Redis so a restart resumes.

    REDIS_URL=redis://127.0.0.1:6379/0 python examples/web_app.py --port 8080
    curl -s localhost:8080/solve -d '{"problem": "What is 17*23?", "thread_id": "t1"}' \\
         -H 'content-type: application/json'

POST the same thread id again after a crash or restart: finished trajectories are
not recomputed, and a finished thread returns its stored answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, HTTPException
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from pacore_graph import create_pacore_graph, to_record
from pacore_graph.backends.env import model_from_env
from pacore_graph.threads import arun_thread


class SolveRequest(BaseModel):
    problem: str
    thread_id: str | None = None
    rounds: str | None = None
    max_tokens: int | None = 256


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


@app.post("/solve")
async def solve(request: SolveRequest) -> SolveResponse:
    """Solves a problem on a thread: starts, resumes or returns the stored answer."""
    if not request.problem.strip():
        raise HTTPException(422, "problem is empty")
    thread_id = request.thread_id or uuid.uuid4().hex
    context = {"rounds": request.rounds, "max_tokens": request.max_tokens}
    status, state = await arun_thread(
        app.state.graph,
        {"messages": [HumanMessage(request.problem)]},
        {"configurable": {"thread_id": thread_id}},
        context={k: v for k, v in context.items() if v is not None},
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
