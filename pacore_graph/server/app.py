"""The OpenAI-compatible HTTP app on Starlette (which LangGraph's server also runs):
`create_app` serves a `Service` on its own and `Server` runs that (``pacore serve``);
`v1_routes` are the ``/v1`` routes to mount into another app (``pacore_graph.studio:app``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from pacore_graph.rounds import resolve_rounds
from pacore_graph.server.completions import Completion
from pacore_graph.server.errors import ApiError, api_error
from pacore_graph.server.models import listed_models, model_object, model_rounds
from pacore_graph.server.requests import parse_request
from pacore_graph.server.runs import Event, Run, idempotency_key
from pacore_graph.server.service import Service
from pacore_graph.server.streaming import SHUTDOWN_MARGIN_S, sse_response

logger = logging.getLogger("pacore.serve")


DRAIN_FACTOR = 4
"""An oversize body is read and dropped up to this many times the limit, so the client gets
its 413 rather than a reset connection."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes.

    Raises:
        ApiError: 413 past the limit.
    """
    length = request.headers.get("content-length", "")
    over = length.isdigit() and int(length) > limit
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            over = over or size > limit
            if not over:
                chunks.append(chunk)
            elif size > DRAIN_FACTOR * limit:
                break
    except ClientDisconnect:
        raise ApiError(
            400, "the client closed the connection", code="client_disconnected"
        ) from None
    if over:
        raise ApiError(
            413,
            f"the request body is larger than this server's limit of {limit} bytes",
            code="request_too_large",
        )
    return b"".join(chunks)


def v1_routes(service: Service) -> list[BaseRoute]:
    """``/chat/completions``, ``/models`` and ``/models/{model}`` (mount them at ``/v1``)."""

    async def chat_completions(request: Request) -> Response:
        code = 500
        try:
            response = await _chat(request)
            code = response.status_code
            return response
        except Exception as exc:
            failure = api_error(exc)
            if failure.status >= 500 and not isinstance(exc, ApiError):
                logger.warning("request failed: %s: %s", type(exc).__name__, failure.message)
                logger.debug("request failed", exc_info=exc)  # a traceback: debug log only
            code = failure.status
            return failure.response(service.settings.secrets)
        finally:
            service.metrics.requests.labels(str(code)).inc()

    async def _chat(request: Request) -> Response:
        namespace = service.authorize(request.headers.get("authorization"))
        settings = service.settings
        body = await read_body(request, settings.max_body_bytes)
        spec = parse_request(
            body,
            service.runs.defaults,
            max_trajectories=settings.max_trajectories,
            max_n=settings.max_n,
        )
        key = idempotency_key(request.headers.get("idempotency-key"))
        runs = service.runs.claim(spec, key, namespace)
        completion = Completion(spec.model, f"{namespace}\0{key}" if key else None)
        for run in runs:
            run.clients += 1
        handed_over = False
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        def release() -> None:
            for run in runs:
                run.unsubscribe(queue)
                service.runs.detach(run)

        try:
            if spec.stream:
                for index, run in enumerate(runs):
                    run.subscribe(queue, index)
                # Headers wait until the runs got past their input checks, so a bad input
                # is still an HTTP status; a run slow to start streams keep-alives.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.keepalive_s):
                        for run in runs:
                            await run.started.wait()
            else:
                await _wait_ended(runs, request, watch=settings.cancel_on_disconnect)
            for run in runs:  # a run that ended in an error: the response's status
                if run.error is not None:
                    raise run.error
            if spec.stream:
                handed_over = True
                return sse_response(completion, spec, runs, queue, settings, release)
            return JSONResponse(completion.message(runs), headers={"x-request-id": completion.id})
        finally:
            if not handed_over:  # else the stream's end lets go of them
                release()

    async def models(request: Request) -> Response:  # also /models/{model}
        try:
            service.authorize(request.headers.get("authorization"))
            default = resolve_rounds(service.runs.defaults.rounds or "low")
            if (name := request.path_params.get("model")) is None:
                return JSONResponse({"object": "list", "data": listed_models(default)})
            return JSONResponse(model_object(name, model_rounds(name, default)))
        except ApiError as exc:
            return exc.response()

    return [
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/models", models, methods=["GET"]),
        Route("/models/{model:path}", models, methods=["GET"]),
    ]


async def _wait_ended(runs: Sequence[Run], request: Request, *, watch: bool) -> None:
    """Waits for every run to end; with ``watch``, a client hanging up first ends the wait
    (and, being the runs' last client, cancels them)."""
    ended: asyncio.Future[Any] = asyncio.gather(*(run.ended.wait() for run in runs))
    if not watch:
        await ended
        return

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    gone: asyncio.Future[Any] = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait([ended, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not ended.done():
        ended.cancel()
        raise ApiError(499, "the client closed the connection", code="client_disconnected")


def create_app(service: Service) -> Starlette:
    """The standalone server: ``/v1`` routes, ``/mcp`` (the MCP tool, when the ``mcp``
    extra is installed), ``/health`` and ``/metrics``, with a lifespan that starts and
    stops the service."""

    async def health(request: Request) -> Response:
        body = {
            "status": "ok" if service.ready else "starting",
            "runs": service.runs.executing(),
            "max_runs": service.settings.max_runs,
            "durable": service.runs.durable is not None,
        }
        return JSONResponse(body, status_code=200 if service.ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # the only exception it handles
        message = f"{request.method} {request.url.path}: {exc.detail}"
        code = "not_found" if exc.status_code == 404 else None
        return ApiError(exc.status_code, message, code=code).response()

    mcp_routes: list[BaseRoute] = []
    mcp_running: Callable[[], contextlib.AbstractAsyncContextManager[Any]] = contextlib.nullcontext
    with contextlib.suppress(ImportError):  # /mcp with the mcp extra (docs/mcp.md)
        from pacore_graph.server.mcp import mcp_endpoint

        mcp_route, mcp_running = mcp_endpoint(service)
        mcp_routes.append(mcp_route)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service.running(), mcp_running():
            yield

    return Starlette(
        routes=[
            Mount("/v1", routes=v1_routes(service)),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *mcp_routes,
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )


class Server(uvicorn.Server):
    """uvicorn serving a `Service` on its own (``pacore serve``). At shutdown the runs get
    ``grace_s`` seconds to end, then are cancelled, so every client still gets an answer
    (503 ``run_cancelled``, or an error event in a stream) before uvicorn cuts the
    connections left, `SHUTDOWN_MARGIN_S` later. ``config``: `uvicorn.Config`'s options."""

    def __init__(self, service: Service, **config: Any) -> None:
        self.service = service
        grace = math.ceil(service.settings.grace_s + SHUTDOWN_MARGIN_S)
        super().__init__(
            uvicorn.Config(create_app(service), timeout_graceful_shutdown=grace, **config)
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        async def end_runs() -> None:
            await asyncio.sleep(self.service.settings.grace_s)
            await self.service.runs.cancel_all()

        ending = asyncio.create_task(end_runs())
        try:
            await super().shutdown(sockets)
        finally:
            ending.cancel()


__all__ = ["Server", "Service", "create_app", "read_body", "v1_routes"]
