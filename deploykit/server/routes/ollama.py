"""Ollama's routes (`ollama.py` translates): generate, chat, show, tags, ps, version."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .. import ollama
from .common import Limits, generate

_NDJSON = "application/x-ndjson"


def ollama_router(serving: ollama.OllamaServing, limits: Limits) -> APIRouter:
    """Return the router of Ollama's API over serving (left out of /openapi.json)."""
    router = APIRouter(include_in_schema=False)

    @router.post("/api/generate")
    async def ollama_generate(request: Request) -> Response:
        return await generate(
            request,
            limits,
            ollama.GenerateRequest,
            serving.generate,
            ollama.error_body,
            media_type=_NDJSON,
        )

    @router.post("/api/chat")
    async def ollama_chat(request: Request) -> Response:
        return await generate(
            request, limits, ollama.ChatRequest, serving.chat, ollama.error_body, media_type=_NDJSON
        )

    @router.post("/api/show")
    async def ollama_show(request: Request) -> Response:
        async def show(req: ollama.ShowRequest):
            return serving.show(req)

        return await generate(request, limits, ollama.ShowRequest, show, ollama.error_body)

    @router.get("/api/tags")
    async def ollama_tags() -> JSONResponse:
        return JSONResponse(serving.tags())

    @router.get("/api/ps")
    async def ollama_ps() -> JSONResponse:
        return JSONResponse(serving.ps())

    @router.get("/api/version")
    async def ollama_version() -> JSONResponse:
        return JSONResponse(serving.version())

    return router
