"""TGI's routes (`tgi.py` translates): /generate, /generate_stream, the root route, /info."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .. import tgi
from .common import Limits, generate


def tgi_router(serving: tgi.TGIServing, limits: Limits) -> APIRouter:
    """Return the router of Hugging Face TGI's API over serving (left out of /openapi.json)."""
    router = APIRouter(include_in_schema=False)

    @router.post("/generate")
    async def tgi_generate(request: Request) -> Response:
        return await generate(
            request, limits, tgi.GenerateRequest, serving.generate, tgi.error_body
        )

    @router.post("/generate_stream")
    async def tgi_generate_stream(request: Request) -> Response:
        return await generate(
            request, limits, tgi.GenerateRequest, serving.generate_stream, tgi.error_body
        )

    @router.post("/")
    async def tgi_compat(request: Request) -> Response:
        # TGI's root route: what huggingface_hub's InferenceClient(base_url).text_generation
        # posts to; "stream" in the body picks the answer's form
        async def either(req: tgi.GenerateRequest):
            return await (serving.generate_stream(req) if req.stream else serving.generate(req))

        return await generate(request, limits, tgi.GenerateRequest, either, tgi.error_body)

    @router.get("/info")
    async def tgi_info() -> JSONResponse:
        return JSONResponse(serving.info().model_dump())

    return router
