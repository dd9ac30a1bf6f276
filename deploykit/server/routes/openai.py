"""OpenAI's routes: completions and chat (streamed or not), the model list, /tokenize."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .. import openapi
from .. import protocol as p
from ..serving import OpenAIServing, parse_body, read_body
from .common import Limits, generate


def openai_router(serving: OpenAIServing, limits: Limits) -> APIRouter:
    """Return the router of OpenAI's API over serving."""
    router = APIRouter()

    @router.post(
        "/v1/completions",
        openapi_extra=openapi.body(p.CompletionRequest),
        responses=openapi.responses(p.CompletionResponse, 400, 404, 413, 503, stream=True),
    )
    async def completions(request: Request) -> Response:
        return await generate(request, limits, p.CompletionRequest, serving.completions)

    @router.post(
        "/v1/chat/completions",
        openapi_extra=openapi.body(p.ChatCompletionRequest),
        responses=openapi.responses(p.ChatCompletionResponse, 400, 404, 413, 503, stream=True),
    )
    async def chat_completions(request: Request) -> Response:
        return await generate(request, limits, p.ChatCompletionRequest, serving.chat)

    @router.get("/v1/models", responses=openapi.responses(p.ModelList))
    async def models() -> JSONResponse:
        return JSONResponse(serving.models().model_dump())

    @router.post(
        "/tokenize",
        openapi_extra=openapi.body(p.TokenizeRequest),
        responses=openapi.responses(p.TokenizeResponse, 400, 404, 413),
    )
    async def tokenize(request: Request) -> JSONResponse:
        req = parse_body(await read_body(request, limits.max_body_bytes), p.TokenizeRequest)
        return JSONResponse(serving.tokenize(req).model_dump())

    return router
