"""The routes operators use: liveness, readiness (503 while draining), Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from .. import openapi
from .. import protocol as p
from ..engine import Engine
from ..metrics import ServerMetrics


def ops_router(engine: Engine, metrics: ServerMetrics) -> APIRouter:
    """Return the router of /health, /ready and /metrics."""
    router = APIRouter()

    @router.get("/health", responses=openapi.responses(p.HealthResponse))
    async def health() -> JSONResponse:
        # liveness only: answering proves the event loop runs; the model is not touched
        return JSONResponse(p.HealthResponse().model_dump())

    @router.get(
        "/ready",
        responses={
            **openapi.responses(p.ReadyResponse),
            503: {
                "model": p.ReadyResponse,
                "description": "Draining, or the engine has stopped: send no traffic here.",
            },
        },
    )
    async def ready(request: Request) -> JSONResponse:
        draining = request.app.state.draining
        ok = engine.accepting and not draining
        return JSONResponse(
            p.ReadyResponse(ready=ok, draining=draining).model_dump(),
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return router
